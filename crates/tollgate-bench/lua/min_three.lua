-- min_three.lua: the smallest three-limit decision this store's rules allow, as a lower bound
-- for tollgate's fast_decide.lua + fast_settle.lua with `--limits 3` (requests GCRA, tokens
-- GCRA, concurrency; the permit dropped at once). Not used by tollgate itself; see
-- docs/bench-redis.md. Within tollgate's rules: a key per limit, each with a TTL, time
-- from TIME, expiring leases in a sorted set, one script call per decision. It does no
-- idempotency, no trimming of expired leases, no verdict reply and no signature, and it
-- releases the lease in the same call (tollgate sends the release later, in a batched
-- fast_settle.lua call), so it is cheaper than any real decision can be.
--
-- KEYS[1]   requests bucket (GCRA; value: the TAT in microseconds)
-- KEYS[2]   tokens bucket (GCRA; value: the TAT in microseconds)
-- KEYS[3]   concurrency leases (sorted set: member lease id, score expiry in microseconds)
-- ARGV[1]   requests: the increment (cost x emission interval, microseconds)
-- ARGV[2]   requests: the tolerance (burst x emission interval, microseconds)
-- ARGV[3]   tokens: the increment
-- ARGV[4]   tokens: the tolerance
-- ARGV[5]   concurrency: slots
-- ARGV[6]   concurrency: lease length in microseconds
-- ARGV[7]   the lease id
-- Returns 1 if admitted (spent, leased and released), 0 if denied.
local call = redis.call
local t = call('TIME')
local now = t[1] * 1000000 + t[2]
local a = tonumber(call('GET', KEYS[1])) or now
local b = tonumber(call('GET', KEYS[2])) or now
if a < now then a = now end
if b < now then b = now end
a = a + ARGV[1]
b = b + ARGV[3]
if a - now > tonumber(ARGV[2]) or b - now > tonumber(ARGV[4]) then return 0 end
if call('ZCARD', KEYS[3]) >= tonumber(ARGV[5]) then return 0 end
call('SET', KEYS[1], a, 'PX', math.ceil((a - now) / 1000))
call('SET', KEYS[2], b, 'PX', math.ceil((b - now) / 1000))
local exp = now + ARGV[6]
call('ZADD', KEYS[3], exp, ARGV[7])
call('PEXPIRE', KEYS[3], math.ceil((exp - now) / 1000))
-- The release (the permit dropped at once).
call('ZREM', KEYS[3], ARGV[7])
return 1
