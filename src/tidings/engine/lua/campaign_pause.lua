-- campaign_pause: hold a fully scheduled campaign's messages that were not released yet.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13]: campaign hash;
-- KEYS[14]: pending zset; KEYS[15]: held zset (msg id -> the due ms it had).
-- ARGV[1]: now ms (the pause instant, from which campaign_resume.lua re-anchors).
-- Each waiting message (in the delayed set at its scheduled due time) leaves the delayed set
-- for the held zset, body and index kept, so no fetch can release it; the others were
-- released already and are counted so (as campaign_sweep.lua does).
-- Returns {held, released}; {0, 0} when already paused; {-1, ''} for an unknown campaign;
-- {-2, status} when the campaign is not 'scheduled' (still scheduling, or cancelled).
-- @flags allow-oom
-- @include common
local CAMPAIGN, PENDING, HELD = KEYS[13], KEYS[14], KEYS[15]
if redis.call('EXISTS', CAMPAIGN) == 0 then return {-1, ''} end
local status = redis.call('HGET', CAMPAIGN, 'status')
if status ~= 'scheduled' then return {-2, status} end
if (redis.call('HGET', CAMPAIGN, 'paused_at') or '') ~= '' then return {0, 0} end
local items = redis.call('ZRANGE', PENDING, 0, -1, 'WITHSCORES')
local held, released = 0, 0
for first = 1, #items, 4000 do
  local last = math.min(first + 3999, #items)
  local ids = {}
  for i = first, last, 2 do ids[#ids + 1] = items[i] end
  local scores = redis.call('ZMSCORE', DELAYED, unpack(ids))
  for j, msg_id in ipairs(ids) do
    local due = items[first + 2 * (j - 1) + 1]
    if scores[j] and tonumber(scores[j]) == tonumber(due) then
      redis.call('ZREM', DELAYED, msg_id)
      redis.call('ZADD', HELD, due, msg_id)
      held = held + 1
    else
      released = released + 1
    end
  end
end
redis.call('DEL', PENDING)
if released > 0 then redis.call('HINCRBY', CAMPAIGN, 'released', released) end
redis.call('HSET', CAMPAIGN, 'paused_at', ARGV[1])
return {held, released}
