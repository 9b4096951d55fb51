-- campaign_cancel: cancel a campaign's messages that were not released yet, a batch at a
-- time; the first call marks the campaign cancelled, which stops campaign_publish.lua.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13]: campaign hash;
-- KEYS[14]: pending zset; KEYS[15]: throttle slots hash; KEYS[16]: held zset (a paused
-- campaign's messages, out of the delayed set: all cancelled).
-- ARGV[1]: at most this many pending entries handled; ARGV[2]: now ms (for the record).
-- Atomic against the fetch script's promotion, each pending message ends exactly one way:
-- still in the delayed set at its scheduled due time -> removed and counted cancelled;
-- otherwise it was released already -> counted released (see campaign_sweep.lua).
-- Returns {cancelled, released, pending left}, or {-1, 0, 0} for an unknown campaign.
-- @flags allow-oom
-- @include common
local CAMPAIGN, PENDING, SLOTS, HELD = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
if redis.call('EXISTS', CAMPAIGN) == 0 then return {-1, 0, 0} end
if redis.call('HGET', CAMPAIGN, 'status') ~= 'cancelled' then
  redis.call('HSET', CAMPAIGN, 'status', 'cancelled', 'cancelled_at', ARGV[2])
end
redis.call('HSET', CAMPAIGN, 'paused_at', '')
-- Variadic calls in slices: Lua's unpack is limited to a few thousand values, and one call
-- per slice instead of one per message is what makes a million cancellations quick.
local function each_slice(values, fn)
  for i = 1, #values, 2000 do fn(unpack(values, i, math.min(i + 1999, #values))) end
end
local limit = tonumber(ARGV[1])
local held = redis.call('ZRANGE', HELD, 0, limit - 1)
if #held > 0 then  -- held by a pause: never released, so every one is cancelled
  each_slice(held, function(...) redis.call('HDEL', BODIES, ...) end)
  each_slice(held, function(...) redis.call('HDEL', INDEX, ...) end)
  each_slice(held, function(...) redis.call('ZREM', HELD, ...) end)
  redis.call('HINCRBY', STATS, 'cancelled', #held)
  redis.call('HINCRBY', CAMPAIGN, 'cancelled', #held)
  return {#held, 0, redis.call('ZCARD', PENDING) + redis.call('ZCARD', HELD)}
end
local items = redis.call('ZRANGE', PENDING, 0, limit - 1, 'WITHSCORES')
local ids, scheduled = {}, {}
for i = 1, #items, 2 do
  ids[#ids + 1] = items[i]
  scheduled[#scheduled + 1] = items[i + 1]
end
local scores = {}
each_slice(ids, function(...)
  for _, s in ipairs(redis.call('ZMSCORE', DELAYED, ...)) do scores[#scores + 1] = s end
end)
local waiting = {}
for i, msg_id in ipairs(ids) do
  if scores[i] and tonumber(scores[i]) == tonumber(scheduled[i]) then
    waiting[#waiting + 1] = msg_id
  end
end
local cancelled, released = #waiting, #ids - #waiting
if cancelled > 0 then
  each_slice(waiting, function(...) redis.call('ZREM', DELAYED, ...) end)
  each_slice(waiting, function(...) redis.call('HDEL', BODIES, ...) end)
  each_slice(waiting, function(...) redis.call('HDEL', INDEX, ...) end)
  redis.call('HINCRBY', STATS, 'cancelled', cancelled)
  redis.call('HINCRBY', CAMPAIGN, 'cancelled', cancelled)
end
if #ids > 0 then each_slice(ids, function(...) redis.call('ZREM', PENDING, ...) end) end
if released > 0 then redis.call('HINCRBY', CAMPAIGN, 'released', released) end
local left = redis.call('ZCARD', PENDING) + redis.call('ZCARD', HELD)
if left == 0 then redis.call('DEL', SLOTS) end
return {cancelled, released, left}
