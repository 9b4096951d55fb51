-- fair_feed: move held messages into the lanes, round robin over tenants, so a tenant
-- with a flood waiting gets one turn like any other.
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13..15]: the tenants-ready
-- list of each lane.
-- ARGV: group, line prefix per lane (3 values: "<prefix>" .. tenant is the line), quota
--       per lane (3 values), wanted, quantum (messages per tenant turn).
-- Only tops the lanes up: what already waits there undelivered counts against `wanted`,
-- so the lanes stay short and a newcomer is never stuck behind a long lane.
-- Returns {messages moved, messages now undelivered in the lanes, messages still held}.
-- While messages stay held it writes to the wake stream: a worker that blocked after a
-- fetch another worker raced it to is woken for the next turn.
-- @flags allow-oom
-- @include common
local group = ARGV[1]
local prefixes = {ARGV[2], ARGV[3], ARGV[4]}
local quota = {tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])}
local wanted, quantum = tonumber(ARGV[8]), tonumber(ARGV[9])
local backlog = 0
for lane = 1, 3 do
  local length = redis.call('XLEN', LANES[lane])
  if length > 0 then
    local pending = redis.call('XPENDING', LANES[lane], group)
    backlog = backlog + length - tonumber(pending[1])
  end
end
wanted = wanted - backlog
local held = tonumber(redis.call('HGET', STATS, 'fair_held') or '0')
if wanted <= 0 or held <= 0 then return {0, backlog, held} end

local moved = 0
local function feed(lane, budget)
  local ready = KEYS[12 + lane]
  local done = 0
  while done < budget do
    local tenant = redis.call('LPOP', ready)
    if not tenant then break end
    local line = prefixes[lane] .. tenant
    for _ = 1, math.min(quantum, budget - done) do
      local item = redis.call('LPOP', line)
      if not item then break end
      local p1 = string.find(item, '|', 1, true)
      local p2 = string.find(item, '|', p1 + 1, true)
      add_to_lane(lane - 1, string.sub(item, p1 + 1, p2 - 1), string.sub(item, p2 + 1),
        string.sub(item, 1, p1 - 1))
      done = done + 1
    end
    if redis.call('LLEN', line) > 0 then redis.call('RPUSH', ready, tenant) end
  end
  return done
end
-- Lanes get their weighted share first, then whatever is left goes to any lane with work.
for lane = 1, 3 do
  local q = math.min(quota[lane], wanted - moved)
  if q > 0 then moved = moved + feed(lane, q) end
end
for lane = 1, 3 do
  if wanted - moved <= 0 then break end
  moved = moved + feed(lane, wanted - moved)
end
if moved > 0 then held = redis.call('HINCRBY', STATS, 'fair_held', -moved) end
if moved > 0 and held > 0 then redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1') end
return {moved, backlog + moved, held}
