-- schedule_commit: record what a tick fired and move the schedule to its next fire time.
-- KEYS[1]: due zset; KEYS[2]: the schedule's hash.
-- ARGV: id, claim token, definition version seen at claim time, checked-until ms,
--       last fired ms or '', occurrences fired, next fire ms or '' (schedule over),
--       error text or ''.
-- Only the holder of the claim commits (a ticker whose lease ran out and was re-claimed, or
-- whose schedule was deleted, commits nothing). When pause/resume/update changed the
-- definition meanwhile (version differs) they already placed the due entry for the new
-- definition, so only the history is recorded here.
-- Returns 1 if committed, 0 if the claim was lost.
-- @flags allow-oom
local DUE, H = KEYS[1], KEYS[2]
if redis.call('HGET', H, 'claim') ~= ARGV[2] then return 0 end
redis.call('HDEL', H, 'claim')
local function raise(field, value)
  local current = tonumber(redis.call('HGET', H, field) or '')
  if current == nil or tonumber(value) > current then redis.call('HSET', H, field, value) end
end
raise('checked_until', ARGV[4])
if ARGV[5] ~= '' then raise('last_fired', ARGV[5]) end
if tonumber(ARGV[6]) > 0 then redis.call('HINCRBY', H, 'fired_count', ARGV[6]) end
redis.call('HSET', H, 'last_error', ARGV[8])
if redis.call('HGET', H, 'version') == ARGV[3] and redis.call('HGET', H, 'paused') ~= '1' then
  if ARGV[7] == '' then
    redis.call('ZREM', DUE, ARGV[1])
  else
    redis.call('ZADD', DUE, ARGV[7], ARGV[1])
  end
  redis.call('HSET', H, 'next_fire', ARGV[7])
end
return 1
