//! The Lua scripts every write runs as: each is atomic in Redis and
//! publishes its own event, so no gateway sees a write without its event.

use redis::Script;

/// Creates a user unless the email (0) or the username (-2) is taken; -1 if
/// the indexes are older than ARGV[9] (index them, then try again). Returns
/// the new id.
pub(super) const CREATE_USER: &str = r"
if tonumber(redis.call('GET', KEYS[5]) or '0') < tonumber(ARGV[9]) then return -1 end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if redis.call('EXISTS', KEYS[4]) == 1 then return -2 end
local id = redis.call('INCR', KEYS[2])
redis.call('HSET', ARGV[1] .. id, 'id', id, 'email', ARGV[2], 'username', ARGV[3],
  'password_hash', ARGV[4], 'is_admin', ARGV[5], 'blocked', 0, 'created_at', ARGV[6], 'token_version', 0,
  'email_key', ARGV[7], 'username_key', ARGV[8])
redis.call('SET', KEYS[1], id)
redis.call('SET', KEYS[4], id)
redis.call('SADD', KEYS[3], id)
return id
";

/// Writes a whole user record with its id (migrations; ARGV[16] its roles). With ARGV[14] /
/// ARGV[15] = '1' it claims the email / username index entry: 0 if the email
/// belongs to another id, 2 if the username does. Index entries of this id's
/// previous record that no longer apply are removed.
pub(super) const IMPORT_USER: &str = r"
if ARGV[14] == '1' then
  local owner = redis.call('GET', KEYS[2])
  if owner and owner ~= ARGV[1] then return 0 end
end
if ARGV[15] == '1' then
  local owner = redis.call('GET', KEYS[5])
  if owner and owner ~= ARGV[1] then return 2 end
end
local old = redis.call('HMGET', KEYS[1], 'email', 'email_key', 'username_key')
local old_email_key = old[2] or old[1]
if old_email_key and old_email_key ~= ARGV[11] and redis.call('GET', ARGV[10] .. old_email_key) == ARGV[1] then
  redis.call('DEL', ARGV[10] .. old_email_key)
end
if old[3] and old[3] ~= ARGV[13] and redis.call('GET', ARGV[12] .. old[3]) == ARGV[1] then
  redis.call('DEL', ARGV[12] .. old[3])
end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'email', ARGV[2], 'username', ARGV[3], 'password_hash', ARGV[4],
  'is_admin', ARGV[5], 'blocked', ARGV[6], 'created_at', ARGV[7], 'token_version', ARGV[8],
  'email_key', ARGV[11], 'username_key', ARGV[13], 'roles', ARGV[16])
if ARGV[14] == '1' then redis.call('SET', KEYS[2], ARGV[1]) end
if ARGV[15] == '1' then redis.call('SET', KEYS[5], ARGV[1]) end
redis.call('SADD', KEYS[3], ARGV[1])
if tonumber(redis.call('GET', KEYS[4]) or '0') < tonumber(ARGV[1]) then redis.call('SET', KEYS[4], ARGV[1]) end
redis.call('PUBLISH', ARGV[9], 'u ' .. ARGV[1])
return 1
";

/// Applies a [`UserChange`]; returns the new record, or nil if there is no such user.
/// `role_add` / `role_remove` edit the comma-separated `roles` field (ARGV[2]
/// the role; sorted by Lua's `<`, which may follow Redis's locale, so readers
/// sort again); an add past ARGV[5] roles changes nothing.
pub(super) const CHANGE_USER: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
if ARGV[1] == 'role_add' or ARGV[1] == 'role_remove' then
  local roles = {}
  for role in string.gmatch(redis.call('HGET', KEYS[1], 'roles') or '', '[^,]+') do
    if role ~= ARGV[2] then table.insert(roles, role) end
  end
  if ARGV[1] == 'role_add' then
    if #roles >= tonumber(ARGV[5]) then return redis.call('HGETALL', KEYS[1]) end
    table.insert(roles, ARGV[2])
  end
  table.sort(roles)
  redis.call('HSET', KEYS[1], 'roles', table.concat(roles, ','))
elseif ARGV[1] == 'admin' then
  redis.call('HSET', KEYS[1], 'is_admin', ARGV[2])
elseif ARGV[1] == 'blocked' then
  if ARGV[2] == '1' and redis.call('HGET', KEYS[1], 'blocked') ~= '1' then
    redis.call('HINCRBY', KEYS[1], 'token_version', 1)
  end
  redis.call('HSET', KEYS[1], 'blocked', ARGV[2])
else
  redis.call('HINCRBY', KEYS[1], 'token_version', 1)
end
redis.call('PUBLISH', ARGV[3], 'u ' .. ARGV[4])
return redis.call('HGETALL', KEYS[1])
";

/// Deletes a user and its index entries (those that point to it: records
/// from before `email_key` was kept are indexed by their email); 1 if it existed.
pub(super) const DELETE_USER: &str = r"
local fields = redis.call('HMGET', KEYS[1], 'email', 'email_key', 'username_key')
if not fields[1] then return 0 end
local email_key = fields[2] or fields[1]
redis.call('DEL', KEYS[1])
if redis.call('GET', ARGV[1] .. email_key) == ARGV[3] then redis.call('DEL', ARGV[1] .. email_key) end
if fields[3] and redis.call('GET', ARGV[4] .. fields[3]) == ARGV[3] then redis.call('DEL', ARGV[4] .. fields[3]) end
redis.call('SREM', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[2], 'u ' .. ARGV[3])
return 1
";

/// Stores a revocation entry until a unix time and announces it. With
/// ARGV[5] = '1' only if the key is new (retiring a refresh token): 0 if not.
pub(super) const REVOKE: &str = r"
if ARGV[5] == '1' then
  if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EXAT', ARGV[2]) then return 0 end
else
  redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
end
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

pub(super) struct Scripts {
    pub(super) create_user: Script,
    pub(super) import_user: Script,
    pub(super) change_user: Script,
    pub(super) delete_user: Script,
    pub(super) revoke: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        Scripts {
            create_user: Script::new(CREATE_USER),
            import_user: Script::new(IMPORT_USER),
            change_user: Script::new(CHANGE_USER),
            delete_user: Script::new(DELETE_USER),
            revoke: Script::new(REVOKE),
        }
    }
}
