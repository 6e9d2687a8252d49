-- nexus: the operator's configuration calls refuse a bad value with 22023, the value and the option that fixes
-- it (the CLI prints these words), never a raw constraint name.
BEGIN;
CREATE EXTENSION IF NOT EXISTS pgtap;
SELECT plan(13);

SELECT throws_ok($$SELECT nexus.set_provider('p', 'openai', NULL, NULL)$$, '22023',
                 'provider p: a provider of kind openai needs a base URL', 'a remote provider needs a base URL');
SELECT throws_ok($$SELECT nexus.set_provider('p', 'openai', 'nope', NULL)$$, '22023',
                 'provider p: base URL ''nope'' is not an http(s) URL', 'the base URL is an http(s) URL');
SELECT throws_ok($$SELECT nexus.set_provider('P q', 'offline', NULL, NULL)$$, '22023', NULL, 'a name is checked');
SELECT throws_ok($$SELECT nexus.set_provider('p', 'cohere', NULL, NULL)$$, '22023',
                 'provider p: provider kind ''cohere'' is not known', 'the kind is one of four');
SELECT throws_ok($$SELECT nexus.set_provider('p', 'offline', NULL, 'sk-123')$$, '22023', NULL,
                 'a key in place of its variable''s name is refused');
SELECT throws_ok($$SELECT nexus.set_provider('p', 'offline', NULL, NULL, -1)$$, '22023',
                 'provider p: timeout -1 s is not positive', 'the timeout is positive');
SELECT throws_ok($$SELECT nexus.set_provider('p', 'offline', NULL, NULL, 5, 11)$$, '22023',
                 'provider p: 11 retries is out of range', 'retries are 0 to 10');
SELECT throws_ok($$SELECT nexus.set_provider('p', 'offline', NULL, NULL, 5, 1, -5)$$, '22023',
                 'provider p: backoff -5 ms is negative', 'the backoff is not negative');
SELECT throws_ok($$SELECT nexus.set_model('m', 'nope', 'm')$$, '22023', 'model m: provider ''nope'' does not exist',
                 'a model names a provider that exists');
SELECT throws_ok($$SELECT nexus.set_model('m', 'offline', 'm', -1)$$, '22023', NULL, 'prices are not negative');
SELECT throws_ok($$SELECT nexus.set_budget('ag', -5, NULL)$$, '22023',
                 'budget ag: a daily limit of -5 tokens is negative', 'a token limit is not negative');
SELECT throws_ok($$SELECT nexus.set_budget('ag', NULL, -1)$$, '22023',
                 'budget ag: a daily cost limit of -1 is negative', 'a cost limit is not negative');
SELECT lives_ok($$SELECT nexus.set_provider('p', 'openai', 'http://127.0.0.1:9/v1', 'P_KEY', 5, 0, 0)$$,
                'good values are taken');

SELECT * FROM finish();
ROLLBACK;
