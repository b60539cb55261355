-- One request's reserve (appended to reserve.lua): KEYS and ARGV as that
-- file describes, the reply is the decision's.
--
-- Commands: one HMGET reads everything the decision needs from the
-- entitlement; a reserve then costs one INCRBY (plus a GET first when the
-- limit is finite, so a refusal writes nothing), and EXPIRE only when the
-- INCRBY created the counter: every TTL the proxy sends for a counter ends
-- at the same instant, so setting it once is enough.
local db = {}

function db.hmget(ent, ...)
  return redis.call('HMGET', ent, 'plan', 'anchor', ...)
end

function db.exists(ent)
  return redis.call('EXISTS', ent)
end

function db.used(key)
  local v = redis.call('GET', key)
  if not v then
    return 0
  end
  return tonumber(v)
end

function db.incr(key, amount, ttl)
  -- INCRBY refuses a value that is not an integer; pcall turns that into
  -- the decision's "malformed" reply instead of a script error.
  local used = redis.pcall('INCRBY', key, amount)
  if type(used) ~= 'number' then
    return nil
  end
  if used == amount and ttl > 0 then
    redis.call('EXPIRE', key, ttl)
  end
  return used
end

return reserve(KEYS, ARGV, db)
