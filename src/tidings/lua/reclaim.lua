-- reclaim: take over messages whose lease expired (their consumer stopped heartbeating),
-- dead-letter poison (delivered more than max_deliveries times), and remove consumers that
-- are dead and hold nothing any more.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, consumer, min idle ms (the visibility timeout), count, max deliveries,
--       on_expire, consumer dead-after ms.
-- Returns {delivered, dropped, removed consumer names} (items as in fetch.lua).
-- @include common
local group, consumer = ARGV[1], ARGV[2]
local min_idle, count, max_deliveries = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local on_expire, dead_after = ARGV[6], tonumber(ARGV[7])
local now = now_ms()
local out, dropped = {}, {}
for lane = 0, 2 do
  if count - #out <= 0 then break end
  local res = redis.call('XAUTOCLAIM', LANES[lane + 1], group, consumer, min_idle, '0-0',
    'COUNT', count - #out)
  deliver_entries(group, lane, res[2], now, max_deliveries, on_expire, out, dropped)
end
local removed = {}
for _, name in ipairs(redis.call('ZRANGEBYSCORE', CONSUMERS, '-inf', now - dead_after)) do
  local holding = 0
  for lane = 1, 3 do
    local summary = redis.call('XPENDING', LANES[lane], group, '-', '+', 1, name)
    holding = holding + #summary
  end
  if holding == 0 then
    for lane = 1, 3 do redis.call('XGROUP', 'DELCONSUMER', LANES[lane], group, name) end
    redis.call('ZREM', CONSUMERS, name)
    removed[#removed + 1] = name
  end
end
return {out, dropped, removed}
