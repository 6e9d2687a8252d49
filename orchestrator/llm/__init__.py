"""LLM providers (OpenAI-compatible, Anthropic, Gemini, offline) and the router that picks among them."""
