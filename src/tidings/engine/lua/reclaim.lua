-- reclaim: take over messages whose lease expired (their consumer stopped heartbeating),
-- dead-letter poison (delivered more than max_deliveries times), and remove consumers that
-- are dead and hold nothing any more.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, consumer, min idle ms (the visibility timeout), count, max deliveries,
--       on_expire, consumer dead-after ms, isolate from (the delivery count from which a
--       message is a suspect: it must run alone in its process), mode ('many' | 'suspect').
-- Mode 'many' claims up to count entries that are not suspects; suspects are skipped and
-- counted, so the worker can make its process idle and claim them in mode 'suspect',
-- which claims exactly one suspect and nothing else. Either way, entries already past
-- max_deliveries are dead-lettered as poison without running again.
-- Returns {delivered, dropped, removed consumer names, suspects skipped} (items as in
-- fetch.lua).
-- @flags allow-oom
-- @include common
local group, consumer = ARGV[1], ARGV[2]
local min_idle, count, max_deliveries = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local on_expire, dead_after = ARGV[6], tonumber(ARGV[7])
local isolate_from, suspect_mode = tonumber(ARGV[8]), ARGV[9] == 'suspect'
local now = now_ms()
local out, dropped = {}, {}
local taken, skipped = 0, 0
-- Look further than count: skipped suspects must not hide the entries behind them.
local scan = math.min(1000, count * 2 + 16)
for lane = 0, 2 do
  if taken >= count then break end
  local claim = {}
  local pending = redis.call('XPENDING', LANES[lane + 1], group, 'IDLE', min_idle, '-', '+', scan)
  for _, p in ipairs(pending) do
    local sid = p[1]
    local next_count = tonumber(redis.call('HGET', DELIVERIES, lane .. sid) or '0') + 1
    local poison = max_deliveries > 0 and next_count > max_deliveries
    local suspect = (not poison) and next_count >= isolate_from
    if poison then
      claim[#claim + 1] = sid
    elseif taken < count and suspect == suspect_mode then
      claim[#claim + 1] = sid
      taken = taken + 1
    elseif suspect then
      skipped = skipped + 1
    end
  end
  if #claim > 0 then
    local entries = redis.call('XCLAIM', LANES[lane + 1], group, consumer, min_idle,
      unpack(claim))
    local live = {}
    for _, entry in ipairs(entries) do
      if type(entry) == 'table' then live[#live + 1] = entry end
    end
    deliver_entries(group, lane, live, now, max_deliveries, on_expire, out, dropped)
  end
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
return {out, dropped, removed, skipped}
