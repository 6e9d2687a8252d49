-- Nexus: LLM routing configuration (providers, models, routes), budgets, the call log, and the
-- human-in-the-loop state (pending items, decisions, users, sessions). Functions that use these
-- tables live in sql/procedures/nexus/ (re-applied on every migrate).
CREATE SCHEMA IF NOT EXISTS nexus;
COMMENT ON SCHEMA nexus IS 'LLM routing, budgets, call log and human-in-the-loop decisions.';

CREATE TABLE nexus.providers (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_-]{0,40}$'),
    kind        text NOT NULL CHECK (kind IN ('openai', 'anthropic', 'gemini', 'offline')),
    base_url    text,
    api_key_env text CHECK (api_key_env ~ '^[A-Z_][A-Z0-9_]*$'),  -- the NAME of the env var, never the key
    timeout_s   double precision NOT NULL DEFAULT 60 CHECK (timeout_s > 0),
    max_retries int NOT NULL DEFAULT 2 CHECK (max_retries BETWEEN 0 AND 10),
    backoff_ms  int NOT NULL DEFAULT 500 CHECK (backoff_ms >= 0),
    enabled     boolean NOT NULL DEFAULT true,
    CHECK (kind = 'offline' OR base_url IS NOT NULL)
);
COMMENT ON TABLE nexus.providers IS 'LLM endpoints; api_key_env names the environment variable holding the key.';

CREATE TABLE nexus.models (
    name            text PRIMARY KEY,
    provider        text NOT NULL REFERENCES nexus.providers ON UPDATE CASCADE ON DELETE CASCADE,
    remote_model    text NOT NULL,               -- the model name the provider expects
    cost_in_per_1k  numeric NOT NULL DEFAULT 0 CHECK (cost_in_per_1k >= 0),
    cost_out_per_1k numeric NOT NULL DEFAULT 0 CHECK (cost_out_per_1k >= 0),
    max_tokens      int NOT NULL DEFAULT 1024 CHECK (max_tokens > 0)
);
COMMENT ON TABLE nexus.models IS 'Models by our name, the provider serving each, and prices per 1000 tokens.';

CREATE TABLE nexus.routes (
    task_type text NOT NULL,                     -- '*' is the route for any other task type
    position  int NOT NULL CHECK (position >= 1),
    model     text NOT NULL REFERENCES nexus.models ON UPDATE CASCADE ON DELETE CASCADE,
    PRIMARY KEY (task_type, position),
    UNIQUE (task_type, model)
);
COMMENT ON TABLE nexus.routes IS 'task_type -> ordered models: position 1 first, the rest are fallbacks in order.';

CREATE TABLE nexus.budgets (
    agent_id     text PRIMARY KEY,               -- '*' applies to every agent without its own row
    daily_tokens bigint CHECK (daily_tokens >= 0),
    daily_cost   numeric CHECK (daily_cost >= 0)
);
COMMENT ON TABLE nexus.budgets IS 'Per-agent daily limits (UTC days) in tokens and/or cost; NULL means no limit.';

CREATE TABLE nexus.budget_usage (
    agent_id text NOT NULL,
    day      date NOT NULL,
    tokens   bigint NOT NULL DEFAULT 0,
    cost     numeric NOT NULL DEFAULT 0,
    PRIMARY KEY (agent_id, day)
);
COMMENT ON TABLE nexus.budget_usage IS 'Tokens and cost reserved or spent per agent per UTC day.';

CREATE TABLE nexus.reservations (
    request_id text PRIMARY KEY,
    agent_id   text NOT NULL,
    day        date NOT NULL,
    tokens     bigint NOT NULL,
    cost       numeric NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE nexus.reservations IS 'Estimated cost reserved for a request in flight; settled after the call.';

CREATE TABLE nexus.llm_calls (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id  text NOT NULL,
    agent_id    text,
    task_type   text,
    attempt     int NOT NULL DEFAULT 1,
    provider    text,
    model       text,
    tokens_in   int NOT NULL DEFAULT 0,
    tokens_out  int NOT NULL DEFAULT 0,
    latency_ms  double precision,
    cost        numeric NOT NULL DEFAULT 0,
    status      text NOT NULL CHECK (status IN ('ok', 'error', 'refused')),
    error       text,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX llm_calls_request ON nexus.llm_calls (request_id);
CREATE INDEX llm_calls_created ON nexus.llm_calls (created_at);
COMMENT ON TABLE nexus.llm_calls IS 'One row per provider attempt (and per refused request): tokens, latency, cost, status, error.';

-- Human in the loop ------------------------------------------------------------------------
CREATE TABLE nexus.users (
    username      text PRIMARY KEY CHECK (username ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE nexus.users IS 'People who may sign in to the HITL page (scrypt password hashes).';

CREATE TABLE nexus.sessions (
    token_hash bytea PRIMARY KEY,                -- sha256 of the cookie value
    username   text NOT NULL REFERENCES nexus.users ON DELETE CASCADE,
    csrf       text NOT NULL,
    expires_at timestamptz NOT NULL
);
COMMENT ON TABLE nexus.sessions IS 'Signed-in browser sessions and their CSRF tokens.';

CREATE TABLE nexus.hitl_items (
    request_id  text PRIMARY KEY,                -- the request message's envelope id
    kind        text NOT NULL CHECK (kind IN ('approval', 'question')),
    queue       text NOT NULL,                   -- approval_requests / question_requests
    msg_id      bigint NOT NULL,                 -- the current delivery holding the message
    read_ct     int NOT NULL,
    lease_until timestamptz NOT NULL,
    reply_to    text NOT NULL,
    agent_id    text NOT NULL,
    payload     jsonb NOT NULL,
    quorum      int NOT NULL DEFAULT 1 CHECK (quorum >= 1),
    deadline    timestamptz,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'decided', 'published')),
    decision    jsonb,                           -- the response message, once decided
    created_at  timestamptz NOT NULL DEFAULT now(),
    decided_at  timestamptz,
    published_at timestamptz
);
CREATE INDEX hitl_items_status ON nexus.hitl_items (status, created_at);
COMMENT ON TABLE nexus.hitl_items IS 'Approvals and questions held for people, keyed by the request id; the page reads these.';

CREATE TABLE nexus.hitl_decisions (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id text NOT NULL REFERENCES nexus.hitl_items,
    decided_by text NOT NULL,
    approved   boolean,                          -- approvals
    response   text,                             -- questions
    comment    text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (request_id, decided_by)
);
COMMENT ON TABLE nexus.hitl_decisions IS 'Every vote and answer given on the page (and automatic timeouts).';

-- With nothing configured, the offline provider answers so that `make run` works without keys.
INSERT INTO nexus.providers (name, kind) VALUES ('offline', 'offline');
INSERT INTO nexus.models (name, provider, remote_model) VALUES ('offline', 'offline', 'offline');
INSERT INTO nexus.routes (task_type, position, model) VALUES ('*', 1, 'offline');
