"""The server-side halves of the store: Lua scripts run by Redis atomically.

Redis runs a script without interleaving any other command, so a script that
first checks everything and only then writes is a transaction that cannot be
half-applied by a concurrent netmaster.  Redis does *not* roll back a script
that raises halfway, so every script here returns its refusals as a JSON value
before its first write, and never calls ``redis.error_reply`` after one.
``APPLY`` goes further: its step 0 checks the whole program (types, numbers,
placeholders naming real allocations) and the type of every key it will touch,
so that no ``redis.call`` after the first write can fail.

``APPLY`` interprets one transaction program (built by
:class:`contiv_sdn.store.txn.Txn`): ``ARGV[1]`` is the program, record values
follow as further ``ARGV`` entries (referenced by index, so they are neither
escaped into the program nor decoded by cjson); ``SNAPSHOT`` and
``READ_KIND`` read consistently.  Numbers are Lua doubles: every integer here (bit positions up
to 2**24, IPv4 addresses, IPv6 host ids below 2**48) is exact in a double and
is printed with ``%.0f`` so that Redis never sees an exponent.
"""

from contiv_sdn.model.addressing import MAC_PREFIX

APPLY = r"""
local P = cjson.decode(ARGV[1])
local NULL = cjson.null

local function num(x) return string.format('%.0f', x) end

local function ipv4(n)
  local a = math.floor(n / 16777216) % 256
  local b = math.floor(n / 65536) % 256
  local c = math.floor(n / 256) % 256
  local d = n % 256
  return num(a) .. '.' .. num(b) .. '.' .. num(c) .. '.' .. num(d)
end

-- the endpoint MAC: contiv_sdn.model.addressing.MAC_PREFIX (put in at import) + 4 bytes
local function mac(n)
  local a = math.floor(n / 16777216) % 256
  local b = math.floor(n / 65536) % 256
  local c = math.floor(n / 256) % 256
  local d = n % 256
  return string.format('{MAC_PREFIX}:%02x:%02x:%02x:%02x', a, b, c, d)
end

local function ipv6(groups, hostid)
  local g = {}
  for i = 1, 8 do g[i] = groups[i] end
  local h = hostid
  local i = 8
  while h > 0 and i >= 1 do
    g[i] = g[i] + (h % 65536)
    h = math.floor(h / 65536)
    i = i - 1
  end
  local best_s, best_l, cur_s, cur_l = 0, 0, 0, 0
  for j = 1, 8 do
    if g[j] == 0 then
      if cur_l == 0 then cur_s = j end
      cur_l = cur_l + 1
      if cur_l > best_l then best_s, best_l = cur_s, cur_l end
    else
      cur_l = 0
    end
  end
  local function hex(v) return string.format('%x', v) end
  if best_l < 2 then
    local parts = {}
    for j = 1, 8 do parts[#parts + 1] = hex(g[j]) end
    return table.concat(parts, ':')
  end
  local left, right = {}, {}
  for j = 1, best_s - 1 do left[#left + 1] = hex(g[j]) end
  for j = best_s + best_l, 8 do right[#right + 1] = hex(g[j]) end
  return table.concat(left, ':') .. '::' .. table.concat(right, ':')
end

-- render an allocated value (or a requested one) for messages and records
local function render(spec, value, fmt)
  fmt = fmt or spec.fmt or 'int'
  local base = spec.base or 0
  if fmt == 'ip' then return ipv4(base + value) end
  if fmt == 'mac' then return mac(base + value) end
  if fmt == 'ip6' then return ipv6(spec.groups, value) end
  return num(base + value)
end

local function errmsg(template, spec, value)
  if value == nil then return template end
  local s = string.gsub(template, '{}', function() return render(spec, value) end)
  return s
end

-- make sure the bit string covers position hi (BITPOS with a BIT range
-- answers -1 or 0 for positions past the end of the string)
local function cover(key, hi)
  local old = redis.call('GETBIT', key, num(hi))
  redis.call('SETBIT', key, num(hi), old)
end

local function setrange(key, lo, hi, v)
  if hi < lo then return end
  cover(key, hi)
  local first_full = math.ceil(lo / 8)
  local last_full = math.floor((hi + 1) / 8) - 1
  if first_full > last_full then
    for p = lo, hi do redis.call('SETBIT', key, num(p), v) end
    return
  end
  for p = lo, first_full * 8 - 1 do redis.call('SETBIT', key, num(p), v) end
  local byte = (v == 1) and '\255' or '\0'
  local n = last_full - first_full + 1
  local chunk = 65536
  local off = 0
  while off < n do
    local len = math.min(chunk, n - off)
    redis.call('SETRANGE', key, num(first_full + off), string.rep(byte, len))
    off = off + len
  end
  for p = (last_full + 1) * 8, hi do redis.call('SETBIT', key, num(p), v) end
end

-- 0. validate the whole program and every key it touches before anything is
-- written: past this point no redis.call can fail (wrong type, bad number) and
-- no value can be unencodable, so the script never stops half-way.
local function bad(what) return cjson.encode({error = 'invalid store transaction: ' .. what}) end
local function isstr(x) return type(x) == 'string' and x ~= '' end
local function isint(x) return type(x) == 'number' and x == x and x == math.floor(x)
  and x > -2^53 and x < 2^53 end
local want_type = {}
local function needs(key, t)
  if want_type[key] and want_type[key] ~= t then return false end
  want_type[key] = t
  return true
end
local function isvalue(i) return type(i) == 'number' and ARGV[i] ~= nil and i >= 2 end
needs('contiv:rev', 'string'); needs('contiv:ver', 'hash'); needs('contiv:kinds', 'set')
for _, g in ipairs(P.guards or {}) do
  if g.t == 'eq' then
    if not (isstr(g.h) and type(g.f) == 'string' and needs(g.h, 'hash')) then return bad('guard') end
  elseif g.t == 'ver' then
    if not (isstr(g.k) and isint(g.v)) then return bad('guard') end
  elseif g.t == 'ex' then
    if not (isstr(g.h) and type(g.f) == 'string' and type(g.e) == 'boolean'
            and needs(g.h, 'hash')) then return bad('guard') end
  else return bad('guard type') end
end
for _, c in ipairs(P.checks or {}) do
  if c.t == 'clear' then
    if not (isstr(c.b) and isint(c.lo) and isint(c.hi) and c.lo >= 0 and c.hi < 2^32
            and type(c.err) == 'string' and needs(c.b, 'string')) then return bad('check') end
  elseif c.t ~= 'fail' or type(c.err) ~= 'string' then return bad('check') end
end
local NAMES = {}
for _, a in ipairs(P.allocs or {}) do
  if not isstr(a.name) or type(a.full) ~= 'string' or type(a.taken) ~= 'string' then
    return bad('allocation')
  end
  if a.want ~= nil and a.want ~= NULL and not (isint(a.want) and a.want >= 0) then
    return bad('allocation ' .. a.name)
  end
  if a.t == 'bit' then
    if not (isstr(a.b) and isint(a.lo) and isint(a.hi) and a.lo >= 0 and a.hi < 2^32
            and isint(a.base or 0) and needs(a.b, 'string')) then return bad('allocation ' .. a.name) end
    if a.cursor ~= nil then
      if not (isstr(a.cursor) and needs(a.cursor, 'string')) then return bad('allocation ' .. a.name) end
      local c = redis.call('GET', a.cursor)
      if c and not tonumber(c) then return bad('cursor ' .. a.cursor) end
    end
  elseif a.t == 'v6' then
    if not (isstr(a.h) and isint(a.max) and type(a.groups) == 'table' and #a.groups == 8
            and needs(a.h, 'hash')) then return bad('allocation ' .. a.name) end
    for i = 1, 8 do if not isint(a.groups[i]) then return bad('allocation ' .. a.name) end end
    local last = redis.call('HGET', a.h, 'last')
    if last and not tonumber(last) then return bad('v6 cursor ' .. a.h) end
  else return bad('allocation type') end
  NAMES[a.name] = true
end
local function names_known(v)
  for n in string.gmatch(v, '%$%$([%w_]+)%$%$') do if not NAMES[n] then return false end end
  for n in string.gmatch(v, '%$%$([%w_]+):%w+%$%$') do if not NAMES[n] then return false end end
  return true
end
for _, o in ipairs(P.ops or {}) do
  local ok
  if o.t == 'put' then
    ok = isstr(o.k) and isstr(o.h) and isstr(o.f) and isvalue(o.vi) and needs(o.h, 'hash')
         and (not o.subs or names_known(ARGV[o.vi]))
  elseif o.t == 'del' then
    ok = isstr(o.k) and isstr(o.h) and isstr(o.f) and needs(o.h, 'hash')
  elseif o.t == 'jincr' then
    ok = isstr(o.k) and isstr(o.h) and isstr(o.f) and isstr(o.field) and isint(o.by)
         and needs(o.h, 'hash')
    if ok then
      local cur = redis.call('HGET', o.h, o.f)
      if cur then
        local fine, d = pcall(cjson.decode, cur)
        if not fine or type(d) ~= 'table' then return bad('record ' .. o.h .. ' ' .. o.f) end
      end
    end
  elseif o.t == 'setbit' then
    ok = isstr(o.b) and isint(o.pos) and o.pos >= 0 and o.pos < 2^32 and (o.v == 0 or o.v == 1)
         and needs(o.b, 'string')
  elseif o.t == 'setrange' then
    ok = isstr(o.b) and isint(o.lo) and isint(o.hi) and o.lo >= 0 and o.hi < 2^32
         and (o.v == 0 or o.v == 1) and needs(o.b, 'string')
  elseif o.t == 'rset' then
    ok = isstr(o.h) and type(o.f) == 'string' and isvalue(o.vi) and needs(o.h, 'hash')
         and (not o.subs or (names_known(ARGV[o.vi]) and names_known(o.f)))
  elseif o.t == 'rdel' then
    ok = isstr(o.h) and type(o.f) == 'string' and needs(o.h, 'hash')
  elseif o.t == 'delkey' then
    ok = isstr(o.key)
  elseif o.t == 'link' then
    ok = isstr(o.k) and isstr(o.h) and isstr(o.f) and isstr(o.s) and isstr(o.mk)
         and (o.vi == nil or isvalue(o.vi)) and needs(o.h, 'hash')
  end
  if not ok then return bad('operation ' .. tostring(o.t)) end
end
for key, t in pairs(want_type) do
  local have = redis.call('TYPE', key)['ok']
  if have ~= 'none' and have ~= t then
    return bad(key .. ' holds a ' .. have .. ', not a ' .. t)
  end
end
do
  local rev = redis.call('GET', 'contiv:rev')
  if rev and not tonumber(rev) then return bad('contiv:rev is not a number') end
end

-- link ops: splice one member into (or out of) a record's link-set in its
-- JSON text, so that adding a child does not re-send the whole parent (see
-- contiv_sdn.store.links, this function's Python twin).  Worked out here,
-- before anything is written, on the text each earlier link op of the
-- program left; a splice that cannot be proven answers {slow = why} and the
-- caller redoes the edit by reading the record.
local LS = ',"link-sets":{'
local LINKV = '{"type":"[^"\\{}]*","key":"[^"\\{}]*"}'
local function link_edit(text, set, mk, val)
  if not string.find(set, '^%w+$') then return nil, 'set name' end
  if not string.find(mk, '^"[%w:%._%-]+"$') then return nil, 'member key' end
  local ls = string.find(text, LS, 1, true)
  if not ls or string.find(text, LS, ls + 1, true) then return nil, 'link-sets' end
  local needle = '"' .. set .. '":{'
  local at = string.find(text, needle, ls + #LS - 1, true)
  if not at then return nil, 'no set ' .. set end
  local before = string.sub(text, at - 1, at - 1)
  if before ~= '{' and before ~= ',' then return nil, 'set ' .. set end
  local brace = at + #needle - 1
  local nxt = string.sub(text, brace + 1, brace + 1)
  if nxt ~= '}' then
    if nxt ~= '"' then return nil, 'set ' .. set end
    local close = string.find(text, '"', brace + 2, true)
    if not close or string.find(string.sub(text, brace + 2, close - 1), '\\', 1, true)
       or string.sub(text, close + 1, close + 2) ~= ':{' then return nil, 'set ' .. set end
  end
  local member = mk .. ':'
  if val then
    if not string.find(val, '^' .. LINKV .. '$') then return nil, 'link value' end
    if string.find(text, member, brace, true) then return nil, 'member present' end
    local sep = ','
    if nxt == '}' then sep = '' end
    return string.sub(text, 1, brace) .. member .. val .. sep .. string.sub(text, brace + 1)
  end
  local p = string.find(text, member .. '{', brace, true)
  if not p then return false end
  local b = string.sub(text, p - 1, p - 1)
  if b ~= '{' and b ~= ',' then return nil, 'member' end
  local rest = string.gsub(string.sub(text, brace + 1, p - 1),
    '"[^"\\{}]*":{"type":"[^"\\{}]*","key":"[^"\\{}]*"},?', '')
  if rest ~= '' then return nil, 'members' end
  local _, e = string.find(text, '^' .. LINKV, p + #member)
  if not e then return nil, 'member value' end
  if b == ',' then return string.sub(text, 1, p - 2) .. string.sub(text, e + 1) end
  if string.sub(text, e + 1, e + 1) == ',' then
    return string.sub(text, 1, p - 1) .. string.sub(text, e + 2)
  end
  return string.sub(text, 1, p - 1) .. string.sub(text, e + 1)
end
local LINKED = {}   -- hash .. NUL .. field -> text after the link ops so far (false = absent)
local LINK_LAST = {} -- hash .. NUL .. field -> index of its last link op
local LINK_ORIG = {}
do
  local plain = {}
  for _, o in ipairs(P.ops or {}) do
    if o.t == 'put' or o.t == 'del' or o.t == 'jincr' then plain[o.h .. '\0' .. o.f] = true end
  end
  for i, o in ipairs(P.ops or {}) do
    if o.t == 'link' then
      local id = o.h .. '\0' .. o.f
      if plain[id] then return bad('link and write of one record ' .. o.h .. ' ' .. o.f) end
      if LINKED[id] == nil then
        LINKED[id] = redis.call('HGET', o.h, o.f) or false
        LINK_ORIG[id] = LINKED[id]
      end
      if LINKED[id] then
        local val = nil
        if o.vi then val = ARGV[o.vi] end
        local out, why = link_edit(LINKED[id], o.s, o.mk, val)
        if out == nil then return cjson.encode({slow = o.h .. ' ' .. o.f .. ': ' .. why}) end
        if out then LINKED[id] = out end
      end
      LINK_LAST[id] = i
    end
  end
end

-- 1. guards: a failed guard means "what you read has changed": retry
for _, g in ipairs(P.guards or {}) do
  if g.t == 'eq' then
    -- g.s: SHA-1 of the value read (nil/null = it was absent), so large
    -- records are not shipped twice
    local cur = redis.call('HGET', g.h, g.f)
    if g.s == nil or g.s == NULL then
      if cur then return cjson.encode({conflict = g.h .. ' ' .. g.f}) end
    elseif not cur or redis.sha1hex(cur) ~= g.s then
      return cjson.encode({conflict = g.h .. ' ' .. g.f})
    end
  elseif g.t == 'ver' then
    local cur = tonumber(redis.call('HGET', 'contiv:ver', g.k) or '0')
    if cur ~= g.v then return cjson.encode({conflict = 'kind ' .. g.k}) end
  elseif g.t == 'ex' then
    -- only "the record is (not) there": its content may change meanwhile
    if (redis.call('HEXISTS', g.h, g.f) == 1) ~= g.e then
      return cjson.encode({conflict = g.h .. ' ' .. g.f})
    end
  end
end

-- 2. checks: a failed check is a refusal with a message
for _, c in ipairs(P.checks or {}) do
  if c.t == 'clear' then
    cover(c.b, c.hi)
    local pos = redis.call('BITPOS', c.b, 1, num(c.lo), num(c.hi), 'BIT')
    if pos >= 0 and pos <= c.hi then return cjson.encode({error = errmsg(c.err, c, pos)}) end
  elseif c.t == 'fail' then
    return cjson.encode({error = c.err})
  end
end

-- 3. allocations: all of them succeed or none stays taken
local R = {}
local SPEC = {}
local taken = {}
local taken6 = {}
local function undo()
  for _, t in ipairs(taken) do redis.call('SETBIT', t[1], num(t[2]), 0) end
  for _, t in ipairs(taken6) do redis.call('HDEL', t[1], t[2]) end
end
for _, a in ipairs(P.allocs or {}) do
  SPEC[a.name] = a
  if a.t == 'bit' then
    if a.want ~= nil and a.want ~= NULL then
      local w = a.want
      local bit = 0
      if w >= a.lo and w <= a.hi then bit = redis.call('GETBIT', a.b, num(w)) end
      if w < a.lo or w > a.hi or (bit == 1 and not a.shared) then
        undo()
        return cjson.encode({error = errmsg(a.taken, a, w)})
      end
      if bit == 0 then
        redis.call('SETBIT', a.b, num(w), 1)
        taken[#taken + 1] = {a.b, w}
      end
      R[a.name] = w
    else
      cover(a.b, a.hi)
      local pos = -1
      if a.cursor then
        local c = tonumber(redis.call('GET', a.cursor) or tostring(a.lo))
        if c < a.lo or c > a.hi then c = a.lo end
        pos = redis.call('BITPOS', a.b, 0, num(c), num(a.hi), 'BIT')
        if pos < 0 or pos > a.hi then
          pos = redis.call('BITPOS', a.b, 0, num(a.lo), num(a.hi), 'BIT')
        end
      else
        pos = redis.call('BITPOS', a.b, 0, num(a.lo), num(a.hi), 'BIT')
      end
      if pos < 0 or pos > a.hi or pos < a.lo then
        undo()
        return cjson.encode({error = a.full})
      end
      redis.call('SETBIT', a.b, num(pos), 1)
      taken[#taken + 1] = {a.b, pos}
      if a.cursor then
        local nxt = pos + 1
        if nxt > a.hi then nxt = a.lo end
        redis.call('SET', a.cursor, num(nxt))
      end
      R[a.name] = pos
    end
  elseif a.t == 'v6' then
    -- host ids in a hash (field = decimal host id); "last" remembers the
    -- previous allocation so the next one starts after it, as Contiv does
    if a.want ~= nil and a.want ~= NULL then
      local f = num(a.want)
      if redis.call('HEXISTS', a.h, f) == 1 and not a.shared then
        undo()
        return cjson.encode({error = errmsg(a.taken, a, a.want)})
      end
      if redis.call('HSETNX', a.h, f, '1') == 1 then taken6[#taken6 + 1] = {a.h, f} end
      R[a.name] = a.want
    else
      local used = redis.call('HLEN', a.h)
      if redis.call('HEXISTS', a.h, 'last') == 1 then used = used - 1 end
      if used >= a.max then
        undo()
        return cjson.encode({error = a.full})
      end
      local cur = tonumber(redis.call('HGET', a.h, 'last') or '0')
      local found = nil
      for _ = 1, used + 1 do
        cur = cur + 1
        if cur > a.max then cur = 1 end
        if redis.call('HEXISTS', a.h, num(cur)) == 0 then found = cur; break end
      end
      if not found then
        undo()
        return cjson.encode({error = a.full})
      end
      redis.call('HSET', a.h, num(found), '1')
      taken6[#taken6 + 1] = {a.h, num(found)}
      redis.call('HSET', a.h, 'last', num(found))
      R[a.name] = found
    end
  end
end

-- 4. writes (nothing below can refuse)
local function subst(s)
  s = string.gsub(s, '"%$%$([%w_]+)%$%$"', function(n) return render(SPEC[n], R[n], 'int') end)
  s = string.gsub(s, '%$%$([%w_]+):(%w+)%$%$', function(n, f) return render(SPEC[n], R[n], f) end)
  return s
end

local rev = redis.call('INCR', 'contiv:rev')
local written = {}
local bumped = {}
local changes = {}
local function touched(kind, key, op)
  if not bumped[kind] then
    bumped[kind] = redis.call('HINCRBY', 'contiv:ver', kind, 1)
    redis.call('SADD', 'contiv:kinds', kind)
  end
  changes[#changes + 1] = {kind, key, op}
end

for i, o in ipairs(P.ops or {}) do
  if o.t == 'put' then
    local v = ARGV[o.vi]
    if o.subs then v = subst(v) end
    redis.call('HSET', o.h, o.f, v)
    touched(o.k, o.f, 'set')
    if o.ret then written[#written + 1] = {o.k, o.f, v} end
  elseif o.t == 'del' then
    if redis.call('HDEL', o.h, o.f) == 1 then touched(o.k, o.f, 'del') end
  elseif o.t == 'jincr' then
    local cur = redis.call('HGET', o.h, o.f)
    local fine, d = false, nil
    if cur then fine, d = pcall(cjson.decode, cur) end
    if fine and type(d) == 'table' then
      d[o.field] = (tonumber(d[o.field]) or 0) + o.by
      local enc_ok, enc = pcall(cjson.encode, d)
      if enc_ok then
        redis.call('HSET', o.h, o.f, enc)
        touched(o.k, o.f, 'set')
      end
    end
  elseif o.t == 'setbit' then
    redis.call('SETBIT', o.b, num(o.pos), o.v)
  elseif o.t == 'setrange' then
    setrange(o.b, o.lo, o.hi, o.v)
  elseif o.t == 'rset' then
    local v, f = ARGV[o.vi], o.f
    if o.subs then v = subst(v); f = subst(f) end
    redis.call('HSET', o.h, f, v)
  elseif o.t == 'rdel' then
    redis.call('HDEL', o.h, o.f)
  elseif o.t == 'delkey' then
    redis.call('DEL', o.key)
  elseif o.t == 'link' then
    local id = o.h .. '\0' .. o.f
    if LINK_LAST[id] == i and LINKED[id] and LINKED[id] ~= LINK_ORIG[id] then
      redis.call('HSET', o.h, o.f, LINKED[id])
      touched(o.k, o.f, 'set')
    end
  end
end

for _, c in ipairs(changes) do
  redis.call('PUBLISH', 'contiv:changes',
    cjson.encode({kind = c[1], key = c[2], op = c[3], rev = rev}))
end

local vers = {}
for k, v in pairs(bumped) do vers[k] = v end
local allocs = {}
for k, v in pairs(R) do allocs[k] = v end
if #written > 0 then
  return cjson.encode({rev = rev, allocs = allocs, vers = vers, written = written})
end
return cjson.encode({rev = rev, allocs = allocs, vers = vers})
""".replace("{MAC_PREFIX}", MAC_PREFIX)

# The reads below answer ONE bulk string holding a JSON document built by
# concatenating the stored records (which are JSON already): parsing one
# document with the C json module is far cheaper than txredisapi parsing
# thousands of bulk replies in Python.
_HASH_DOC = r"""
local function hash_doc(hash, parts)
  local flat = redis.call('HGETALL', hash)
  parts[#parts + 1] = '{'
  for j = 1, #flat, 2 do
    if j > 1 then parts[#parts + 1] = ',' end
    parts[#parts + 1] = cjson.encode(flat[j])
    parts[#parts + 1] = ':'
    parts[#parts + 1] = flat[j + 1]
  end
  parts[#parts + 1] = '}'
end
"""

SNAPSHOT = _HASH_DOC + r"""
local kinds = redis.call('SMEMBERS', 'contiv:kinds')
local parts = {'{"rev":', redis.call('GET', 'contiv:rev') or '0', ',"kinds":{'}
for i, kind in ipairs(kinds) do
  local hash
  if string.sub(kind, 1, 4) == 'obj:' then hash = 'contiv:' .. kind
  else hash = 'contiv:state:' .. kind end
  if i > 1 then parts[#parts + 1] = ',' end
  parts[#parts + 1] = cjson.encode(kind)
  parts[#parts + 1] = ':'
  hash_doc(hash, parts)
end
parts[#parts + 1] = '}}'
return table.concat(parts)
"""

READ_KIND = _HASH_DOC + r"""
local ver = redis.call('HGET', 'contiv:ver', ARGV[1]) or '0'
if ver == ARGV[2] then return {ver} end
local parts = {}
hash_doc(KEYS[1], parts)
return {ver, table.concat(parts)}
"""

LIST = _HASH_DOC + r"""
local parts = {}
hash_doc(KEYS[1], parts)
return table.concat(parts)
"""
