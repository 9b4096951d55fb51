-- dlq_replay: move dead-lettered messages back to a lane for a fresh set of attempts.
-- KEYS[1..12]: the queue keys (see includes/common.lua).
-- ARGV: per message: dead-letter entry id, lane, msg id, new envelope (attempts reset).
-- An entry already gone (replayed or purged by someone else) is skipped.
-- Returns the number of messages replayed.
-- @include common
local replayed = 0
for i = 1, #ARGV, 4 do
  if redis.call('XDEL', DLQ, ARGV[i]) == 1 then
    add_to_lane(tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], '')
    replayed = replayed + 1
  end
end
if replayed > 0 then redis.call('HINCRBY', STATS, 'replayed', replayed) end
return replayed
