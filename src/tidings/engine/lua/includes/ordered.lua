-- Shared by the ordered-queue partition scripts (inlined at "-- @include ordered").
-- Every partition script receives these eight KEYS, all under the partition's hash tag
-- {name#i}, so one partition is one cluster slot:
--   KEYS[1] owner hash {w = worker, e = epoch, x = lease expiry ms (server clock)}
--   KEYS[2] ready list: keys whose head message may run now, in turn order
--   KEYS[3] active hash: key -> "epoch|msg id" of its head, in flight
--   KEYS[4] waiting zset: key -> due ms (its head waits out a retry or a snooze)
--   KEYS[5] blocked hash: key -> JSON (its head failed: retrying, or held for an operator)
--   KEYS[6] deliveries hash: msg id -> deliveries not settled (poison detection)
--   KEYS[7] dead-letter stream          KEYS[8] stats hash
-- A key's messages are the list <key prefix><key>, under the same tag. Items are
-- "<msg id>|<envelope>". Invariant: a key with messages is in exactly one of ready,
-- active, waiting or blocked-and-held; a key without messages is in none.
local OWNER, READY, ACTIVE, WAITING = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local BLOCKED, DELIVERIES, DLQ, STATS = KEYS[5], KEYS[6], KEYS[7], KEYS[8]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Only the current owner, by epoch, may change a partition: a worker that lost it (its
-- lease ran out and another took over) is refused.
local function owns(worker, epoch)
  local o = redis.call('HMGET', OWNER, 'w', 'e')
  return o[1] == worker and o[2] == epoch
end

local function id_of(item)
  local bar = string.find(item, '|', 1, true)
  if not bar then return item end
  return string.sub(item, 1, bar - 1)
end

-- Append an item to its key's list. A list that was empty belonged to a key that was
-- nowhere: it joins the line now.
local function append(list, key, item)
  if redis.call('RPUSH', list, item) == 1
      and redis.call('HEXISTS', ACTIVE, key) == 0
      and not redis.call('ZSCORE', WAITING, key)
      and redis.call('HEXISTS', BLOCKED, key) == 0 then
    redis.call('RPUSH', READY, key)
  end
end

-- After a key's head settled: back at the end of the line if it has more messages.
local function requeue(key, list)
  if redis.call('LLEN', list) > 0 then redis.call('RPUSH', READY, key) end
end

-- Move a key's head to the dead-letter stream; the key goes on with its next message.
local function dead_letter_head(key, list, reason, err, now)
  local item = redis.call('LPOP', list)
  if item then
    local bar = string.find(item, '|', 1, true) or 0
    redis.call('XADD', DLQ, '*', 'i', id_of(item), 'm', string.sub(item, bar + 1), 'key', key,
      'reason', reason, 'error', err, 'dead_at', tostring(now))
    redis.call('HDEL', DELIVERIES, id_of(item))
    redis.call('HINCRBY', STATS, 'dead_lettered', 1)
  end
  redis.call('HDEL', ACTIVE, key)
  redis.call('HDEL', BLOCKED, key)
  redis.call('ZREM', WAITING, key)
  requeue(key, list)
end

-- Whatever a partition's previous owner had in flight runs again: each is its key's head,
-- so it goes first and the key's order holds.
local function requeue_active()
  local keys = redis.call('HKEYS', ACTIVE)
  for _, key in ipairs(keys) do redis.call('RPUSH', READY, key) end
  if #keys > 0 then redis.call('DEL', ACTIVE) end
  return #keys
end
