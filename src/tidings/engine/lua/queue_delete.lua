-- queue_delete: delete a queue's fixed keys, unless it still holds messages or live workers.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV[1]: 1 to delete whatever it holds; ARGV[2]: visibility timeout in ms (a consumer that
-- heartbeated within it is live).
-- Returns {deleted (1|0), messages held, live consumers}. One script, so no message can
-- arrive between the check and the deletion.
-- @flags allow-oom
-- @include common
local held = 0
for _, lane in ipairs(LANES) do held = held + redis.call('XLEN', lane) end
held = held + redis.call('ZCARD', DELAYED) + redis.call('XLEN', DLQ)
held = held + tonumber(redis.call('HGET', STATS, 'fair_held') or '0')
local live = redis.call('ZCOUNT', CONSUMERS, now_ms() - tonumber(ARGV[2]), '+inf')
if ARGV[1] ~= '1' and (held > 0 or live > 0) then return {0, held, live} end
redis.call('DEL', unpack(KEYS))
return {1, held, live}
