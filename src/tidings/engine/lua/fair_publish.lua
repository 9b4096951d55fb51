-- fair_publish: hold messages in their tenant's line until the fair feed lets them into
-- the queue's lanes (see fair_feed.lua).
-- KEYS[1..12]: the queue keys (see includes/common.lua); KEYS[13..15]: the tenants-ready
-- list of each lane (high, normal, low); KEYS[16..]: tenant lines (lists), all under the
-- queue's hash tag.
-- ARGV: per message, 5 values: KEYS index of its tenant line, tenant, lane (0-2),
--       expires_at ms or '', "<msg id>|<envelope>".
-- Returns the number of messages held.
-- @include common
local n = 0
for i = 1, #ARGV, 5 do
  local line, tenant, lane = KEYS[tonumber(ARGV[i])], ARGV[i + 1], tonumber(ARGV[i + 2])
  -- The expiry travels with the item: "<expires>|<msg id>|<envelope>".
  if redis.call('RPUSH', line, ARGV[i + 3] .. '|' .. ARGV[i + 4]) == 1 then
    -- A tenant joins the back of its lane's round once it has something waiting.
    redis.call('RPUSH', KEYS[13 + lane], tenant)
  end
  n = n + 1
end
redis.call('HINCRBY', STATS, 'published', n)
redis.call('HINCRBY', STATS, 'fair_held', n)
redis.call('XADD', WAKE, 'MAXLEN', '1', '*', 'w', '1')
return n
