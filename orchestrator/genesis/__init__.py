"""Genesis (database `genesis`): runs job_requests in the sandbox, exactly once per request id."""
