-- dlq_reencrypt: replace the envelopes of dead letters (a payload encrypted again with
-- the active key), keeping every other field of the entry.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: per entry: dead-letter entry id, new envelope.
-- Streams are append-only: the entry is added again (a new entry id, at the end) and the
-- old one deleted; the index follows. An entry already gone (replayed, purged) is skipped.
-- Returns the number of entries replaced.
-- @flags allow-oom
-- @include common
local replaced = 0
for i = 1, #ARGV, 2 do
  local found = redis.call('XRANGE', DLQ, ARGV[i], ARGV[i])
  if #found == 1 then
    local flat = found[1][2]
    local args = {'XADD', DLQ, '*'}
    local msg_id = nil
    for j = 1, #flat, 2 do
      local value = flat[j + 1]
      if flat[j] == 'm' then value = ARGV[i + 1] end
      if flat[j] == 'i' then msg_id = value end
      args[#args + 1] = flat[j]
      args[#args + 1] = value
    end
    local dsid = redis.call(unpack(args))
    redis.call('XDEL', DLQ, ARGV[i])
    if msg_id then redis.call('HSET', INDEX, msg_id, 'x:' .. dsid) end
    replaced = replaced + 1
  end
end
return replaced
