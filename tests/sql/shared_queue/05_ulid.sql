-- ops.ulid(): 26 Crockford base32 characters, unique, sortable by creation time.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(16);

SELECT is(length(ops.ulid()), 26, 'a ULID has 26 characters');
SELECT matches(ops.ulid(), '^[0-7][0-9A-HJKMNP-TV-Z]{25}$', 'a ULID uses Crockford base32 only (no I, L, O, U)');
SELECT ok(ops.is_ulid(ops.ulid()), 'ops.is_ulid accepts a fresh ULID');

-- ops.is_ulid refuses near-misses.
SELECT ok(NOT ops.is_ulid(lower(ops.ulid())), 'ops.is_ulid refuses lower case');
SELECT ok(NOT ops.is_ulid(left(ops.ulid(), 25)), 'ops.is_ulid refuses 25 characters');
SELECT ok(NOT ops.is_ulid('01ARYZ6S41TSV4RRFFQ69G5FAU'), 'ops.is_ulid refuses the letter U');
SELECT ok(NOT ops.is_ulid('81ARYZ6S41TSV4RRFFQ69G5FAV'), 'ops.is_ulid refuses a first character over 7 (overflow)');

-- The timestamp part: the ULID spec's example time encodes to its example prefix, and decodes back.
SELECT is(left(ops.ulid('2016-07-30 22:36:16.385+00'), 10), '01ARYZ6S41',
          'timestamp 1469918176385 ms encodes to 01ARYZ6S41 (ULID spec example)');
SELECT is(left(ops.ulid('1970-01-01 00:00:00+00'), 10), '0000000000', 'the epoch encodes to 0000000000');
SELECT is(
    (SELECT sum((strpos('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(u, i, 1)) - 1)::numeric * 32::numeric ^ (10 - i))
       FROM (SELECT ops.ulid('2026-03-04 05:06:07.089+00') AS u) x, generate_series(1, 10) AS i),
    (extract(epoch FROM '2026-03-04 05:06:07.089+00'::timestamptz) * 1000)::numeric,
    'the first 10 characters decode back to the millisecond timestamp');

-- Uniqueness over 10k generated back to back (same millisecond often: the random part differs).
CREATE TEMP TABLE t_ulids ON COMMIT DROP AS
SELECT g AS n, ops.ulid() AS u FROM generate_series(1, 10000) AS g;
SELECT is((SELECT count(DISTINCT u)::int FROM t_ulids), 10000, '10000 ULIDs generated back to back are all distinct');
SELECT is((SELECT count(*)::int FROM t_ulids WHERE NOT ops.is_ulid(u)), 0, 'all 10000 are well-formed');
SELECT ok((SELECT count(DISTINCT right(u, 16)) FROM t_ulids) = 10000, 'the 80-bit random parts are all distinct too');

-- Time ordering: generation order never goes back in the time prefix; later times sort later.
SELECT is_empty($$SELECT n FROM (SELECT n, u, lag(u) OVER (ORDER BY n) AS prev FROM t_ulids) x
                   WHERE left(prev, 10) > left(u, 10)$$,
                'the time prefix never decreases in generation order');
SELECT is_empty($$WITH t AS (SELECT i, ops.ulid(timestamptz '2026-01-01 00:00:00+00' + i * interval '1 millisecond') AS u
                               FROM generate_series(1, 2000) AS i)
                  SELECT i FROM (SELECT i, row_number() OVER (ORDER BY u COLLATE "C") AS r FROM t) x WHERE r <> i$$,
                'ULIDs of 2000 successive milliseconds sort (byte order) exactly by time');
SELECT ok(ops.ulid('2026-01-01 00:00:00.001+00') COLLATE "C" > ops.ulid('2026-01-01 00:00:00.000+00') COLLATE "C",
          'a ULID one millisecond later sorts after, whatever the random part');

SELECT * FROM finish();
ROLLBACK;
