UPDATE genesis.limits
   SET description = 'address space per process (RLIMIT_AS; node gets +1024 MB of V8 reservations)'
 WHERE name = 'memory_mb';
