-- depends: 0003_request_hash
-- memory_mb's description said what it meant before jobs had a cgroup, and named only node's extra address
-- space; Elixir and Rust (seed 002) reserve address space up front too. Only the text changes.
UPDATE genesis.limits
   SET description = 'memory of the whole job through its cgroup (without one: per process); also address space per '
                     'process (RLIMIT_AS) plus what runtimes reserve up front: +1024 MB node (V8), +512 MB elixir '
                     '(Erlang VM) and rust (rustc; the compile counts against the limits)'
 WHERE name = 'memory_mb';
