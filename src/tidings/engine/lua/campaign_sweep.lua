-- campaign_sweep: count as released the campaign's messages that the fetch script promoted
-- out of the delayed set, and return the campaign record.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13]: campaign hash;
-- KEYS[14]: pending zset (msg id -> the due ms it was scheduled with); KEYS[15]: held zset
-- (a paused campaign's messages, counted as pending: not released).
-- ARGV[1]: at most this many pending entries examined.
-- A message still waits if it sits in the delayed set at exactly its scheduled due time.
-- Anything else means it was released: promoted (and maybe since retried or snoozed back
-- into the delayed set at a later time, or settled). Promotion goes in (due, id) order, the
-- order of the pending zset, so the released ones are a prefix of it: stop at the first
-- message still waiting.
-- Returns {released now, 1 if the limit stopped the sweep else 0, pending left,
--          flat campaign hash}.
-- @flags allow-oom
-- @include common
local CAMPAIGN, PENDING, HELD = KEYS[13], KEYS[14], KEYS[15]
local limit = tonumber(ARGV[1])
local items = redis.call('ZRANGE', PENDING, 0, limit - 1, 'WITHSCORES')
local released = {}
local waiting = false
-- Look at the head in slices (unpack is limited, and the prefix is usually short).
for first = 1, #items, 4000 do
  local last = math.min(first + 3999, #items)
  local ids = {}
  for i = first, last, 2 do ids[#ids + 1] = items[i] end
  local scores = redis.call('ZMSCORE', DELAYED, unpack(ids))
  for j, msg_id in ipairs(ids) do
    local s = scores[j]
    if s and tonumber(s) == tonumber(items[first + 2 * (j - 1) + 1]) then
      waiting = true
      break
    end
    released[#released + 1] = msg_id
  end
  if waiting then break end
end
for i = 1, #released, 2000 do
  redis.call('ZREM', PENDING, unpack(released, i, math.min(i + 1999, #released)))
end
if #released > 0 then redis.call('HINCRBY', CAMPAIGN, 'released', #released) end
local more = 0
if not waiting and #items / 2 >= limit then more = 1 end
local left = redis.call('ZCARD', PENDING) + redis.call('ZCARD', HELD)
return {#released, more, left, redis.call('HGETALL', CAMPAIGN)}
