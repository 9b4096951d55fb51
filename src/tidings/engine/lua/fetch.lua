-- fetch: promote due delayed messages, then read new messages for one consumer, lanes
-- weighted by the quotas the worker computed, leftover capacity to any lane with work.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: group, consumer, quota high, quota normal, quota low, capacity,
--       promote limit, on_expire ('dead_letter' | 'drop').
-- Returns {delivered, dropped, ms until next delayed message or -1, last entry ids or {}}
-- where delivered items are {lane, entry id, token, envelope, msg id}. The last entry ids
-- (of the three lanes and the wake stream) come back when every lane ran dry, so the
-- worker can block on them right away instead of asking again.
-- @flags allow-oom
-- @include common
local group, consumer = ARGV[1], ARGV[2]
local quota = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local capacity, promote_limit, on_expire = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8]
local now = now_ms()
local out, dropped = {}, {}

local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', now, 'LIMIT', 0, promote_limit)
if #due > 0 then
  local bodies = redis.call('HMGET', BODIES, unpack(due))
  for i, msg_id in ipairs(due) do
    local body = bodies[i]
    if body then
      -- lane|expires|envelope; anything else was not written by tidings: park it rather
      -- than fail every fetch of the queue on it.
      local p1 = string.find(body, '|', 1, true)
      local p2 = p1 and string.find(body, '|', p1 + 1, true)
      local lane = p1 and tonumber(string.sub(body, 1, p1 - 1))
      local expires = p2 and string.sub(body, p1 + 1, p2 - 1)
      if lane and (lane == 0 or lane == 1 or lane == 2) and (expires == '' or tonumber(expires)) then
        add_to_lane(lane, msg_id, string.sub(body, p2 + 1), expires)
      else
        dead_letter_raw(msg_id, body, 'undecodable',
          '{"type":"EnvelopeError","message":"malformed delayed body","field":"delayed"}', now)
        dropped[#dropped + 1] = {'undecodable', msg_id, 1, ''}
      end
    end
  end
  redis.call('HDEL', BODIES, unpack(due))
  redis.call('ZREM', DELAYED, unpack(due))
end
if #due > 0 then redis.call('HINCRBY', STATS, 'promoted', #due) end

local exhausted = {false, false, false}
local function read(lane, count)
  local res = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', count,
    'STREAMS', LANES[lane + 1], '>')
  local entries = (res and res[1] and res[1][2]) or {}
  if #entries < count then exhausted[lane + 1] = true end
  deliver_entries(group, lane, entries, now, 0, on_expire, out, dropped)
  return #entries
end
local left = capacity
for lane = 0, 2 do
  local q = math.min(quota[lane + 1], left)
  if q > 0 then left = left - read(lane, q) end
end
-- Work conservation: a lane without traffic gives its share to the others, highest first.
for lane = 0, 2 do
  if left <= 0 then break end
  if not exhausted[lane + 1] then left = left - read(lane, left) end
end

local next_due = -1
local head = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
if head[2] then next_due = math.max(0, tonumber(head[2]) - now) end
local last = {}
if left > 0 then
  for i, key in ipairs({LANES[1], LANES[2], LANES[3], WAKE}) do
    local e = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)
    last[i] = (e[1] and e[1][1]) or '0-0'
  end
end
return {out, dropped, next_due, last}
