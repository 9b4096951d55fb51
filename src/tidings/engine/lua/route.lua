-- route: publish one topic message's copies to every queue its rules chose, in one atomic
-- step, under the rule set version the producer routed it with.
-- KEYS[1]: the rule set's version key; KEYS[2]: the routing stats hash; then per target
--   queue its twelve keys (see includes/common.lua) followed by its idempotency keys.
-- ARGV[1]: the rule set version the copies were computed with ('0': none saved yet);
--   ARGV[2]: how many queue groups follow; ARGV[3]: how many stats increments follow,
--   then that many (field, increment) pairs for KEYS[2]. Then per group:
--   'p' (publish) or 'd' (dead-letter, for what could not be routed), the number of its
--   KEYS (12 + idempotency keys), and
--   for 'p': dedupe window ms, the two depth limits ('' = unbounded, as publish.lua),
--     the message count, then 7 values per message (see includes/admit.lua);
--   for 'd': dedupe window ms, the entry count, then 5 values per entry: msg id,
--     envelope, reason, error, idempotency key index (0 = none).
-- The counters are added unless every copy was a duplicate (a repeated publish).
-- Returns {0, per group a list of {id that stands for it, 1 new | 0 duplicate}};
--   {-2, version} when the stored rule set is not the one routed with (nothing written:
--   route again with the new rules); {-1, depth, group} when a queue is full (nothing
--   written). So a rule change never splits a message: each is routed whole by one version.
-- No @flags: it admits messages, so a full server refuses it before it writes anything.
-- @include common
-- @include admit
local stored = redis.call('GET', KEYS[1]) or '0'
if stored ~= ARGV[1] then return {-2, stored} end

-- Walk the groups once to find where each one's KEYS and ARGV start.
local groups = {}
local kbase, i = 3, 4 + 2 * tonumber(ARGV[3])
for g = 1, tonumber(ARGV[2]) do
  local mode, nkeys = ARGV[i], tonumber(ARGV[i + 1])
  local group = {mode = mode, kbase = kbase, dedupe = ARGV[i + 2]}
  if mode == 'p' then
    group.limit_other, group.limit_low = ARGV[i + 3], ARGV[i + 4]
    group.first = i + 6
    group.last = group.first + 7 * tonumber(ARGV[i + 5]) - 1
  else
    group.first = i + 4
    group.last = group.first + 5 * tonumber(ARGV[i + 3]) - 1
  end
  groups[g] = group
  kbase, i = kbase + nkeys, group.last + 1
end

for g, group in ipairs(groups) do
  if group.mode == 'p' and group.limit_other ~= '' then
    use_queue(group.kbase)
    local depth = overflow(group.kbase, group.first, group.last, tonumber(group.limit_other),
                           tonumber(group.limit_low))
    if depth then return {-1, depth, g} end
  end
end

local replies = {}
local added = 0
for g, group in ipairs(groups) do
  use_queue(group.kbase)
  local out = {}
  if group.mode == 'p' then
    added = added + admit(group.kbase, group.first, group.last, group.dedupe, out)
  else
    for j = group.first, group.last, 5 do
      local msg_id, idem = ARGV[j], tonumber(ARGV[j + 4])
      local existing = false
      if idem > 0 then
        existing = redis.call('SET', KEYS[group.kbase + idem - 1], msg_id, 'PX', group.dedupe,
                              'NX', 'GET')
      end
      if existing then
        out[#out + 1] = {existing, 0}
      else
        now = now or now_ms()
        dead_letter_raw(msg_id, ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], now)
        added = added + 1
        out[#out + 1] = {msg_id, 1}
      end
    end
  end
  replies[g] = out
end
-- The counters count a message once: not again when it was a repeat (every copy a
-- duplicate of one its idempotency key already stored).
if added > 0 or #groups == 0 then
  for s = 4, 3 + 2 * tonumber(ARGV[3]), 2 do
    redis.call('HINCRBY', KEYS[2], ARGV[s], ARGV[s + 1])
  end
end
return {0, replies}
