-- routes_save: store a new version of the rule set if nobody saved one since it was read.
-- KEYS[1]: version (string, absent = 0); KEYS[2]: the current rule set (JSON);
--   KEYS[3]: history hash (version -> rule set JSON); KEYS[4]: audit stream.
-- ARGV[1]: the version the change was made from; ARGV[2]: the new rule set JSON (it names
--   version ARGV[1] + 1); ARGV[3]: actor; ARGV[4]: action; ARGV[5]: detail;
--   ARGV[6]: the pub/sub channel told of the change; ARGV[7]: versions of history to keep.
-- Returns {1, new version}, or {0, stored version} when another change came first.
-- @flags allow-oom
local stored = tonumber(redis.call('GET', KEYS[1]) or '0')
if stored ~= tonumber(ARGV[1]) then return {0, stored} end
local version = stored + 1
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('SET', KEYS[1], version)
redis.call('SET', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], version, ARGV[2])
local keep = tonumber(ARGV[7])
if version > keep then redis.call('HDEL', KEYS[3], version - keep) end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', '10000', '*', 'version', version, 'actor', ARGV[3],
           'action', ARGV[4], 'detail', ARGV[5], 'at', now)
redis.call('PUBLISH', ARGV[6], version)
return {1, version}
