-- key_park: put a message of a paused key aside, if its key is (still) paused.
-- KEYS[1]: paused keys set of the queue, KEYS[2]: parked zset of that key
--          (msg id -> times parked); both under the queue's hash tag.
-- ARGV[1]: the key, ARGV[2]: msg id.
-- Returns 0 if the key is not paused (run the message), else how often it was parked.
-- Checking and parking in one step means a resume (key_resume.lua) either sees this
-- message among the parked ones or runs before it, when this returns 0.
-- @flags allow-oom
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 0 then return 0 end
return tonumber(redis.call('ZINCRBY', KEYS[2], 1, ARGV[2]))
