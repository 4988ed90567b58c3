"""The Redis engine's Lua scripts: each atomic operation is one of these, run by EVALSHA.

Every queue script gets the queue's key base as KEYS[1] (`P:{q:NAME}:`, see keys.py) and
builds the names of the keys it touches from it, so all of them share the queue's hash tag;
ARGV[1] is the prefix, for the pub/sub channels. Numbers computed in Lua are handed to
`redis.call` as numbers, never through `tostring` (which keeps only 14 digits): Redis then
formats them with 17, which reads back as the same double. Times come from Python (the
engine's clock); the one use of Redis `TIME` is the put order `seq`, which only orders.

The scripts decide nothing that `conveyor.domain` decides: they index, count, check that a
task is still in the state a decision was made on, and write the outcome they are given.
"""

from __future__ import annotations

# Helpers shared by the queue scripts, in parts, so that each script defines only what it
# uses (every call runs its script's definitions again). The indexes a task is in follow
# from its status (leave, enter).
_CORE = r"""
local B = KEYS[1]
local P = ARGV[1]
local FINISHED = {succeeded = true, failed = true, cancelled = true, expired = true}
local work = false
local function tkey(id) return B .. 't:' .. id end

local function flush()
  if work then
    redis.call('PUBLISH', P .. ':w:' .. string.match(B, '{q:([^}]*)}'), '')
  end
end
"""

_COUNTS = r"""
local deferred = nil  -- set by a script over many tasks: counts added up, written once

local function count(lv, st, d)
  local f = lv .. ':' .. st
  if deferred then
    deferred[f] = (deferred[f] or 0) + d
  elseif redis.call('HINCRBY', B .. 'n', f, d) == 0 then
    redis.call('HDEL', B .. 'n', f)
  end
end

local function write_counts()
  for f, d in pairs(deferred) do
    if d ~= 0 and redis.call('HINCRBY', B .. 'n', f, d) == 0 then
      redis.call('HDEL', B .. 'n', f)
    end
  end
  deferred = nil
end

"""

_INDEXES = r"""
local grouped = {}  -- lane groups known to be listed in this call
-- set by SETTLE: writes to the indexes no later command of the call reads (the listings,
-- sched, lease, dead, fin, a batch's unfinished set), gathered per key and written at the
-- end; a call moves each task at most once, so no member is added, then removed, in one key
local indexing = nil


local function zrem(k, id)
  if not indexing then
    redis.call('ZREM', k, id)
    return
  end
  local e = indexing[k]
  if not e then e = {rem = {}, add = {}}; indexing[k] = e end
  e.rem[#e.rem + 1] = id
end

local function zadd(k, score, id)
  if not indexing then
    redis.call('ZADD', k, score, id)
    return
  end
  local e = indexing[k]
  if not e then e = {rem = {}, add = {}}; indexing[k] = e end
  e.add[#e.add + 1] = score
  e.add[#e.add + 1] = id
end

local function chunked(command, k, args, step)
  for i = 1, #args, step do
    redis.call(command, k, unpack(args, i, math.min(i + step - 1, #args)))
  end
end

local function write_indexes()
  for k, e in pairs(indexing) do
    chunked('ZREM', k, e.rem, 1000)  -- removals first: a member moved within the key stays
    chunked('ZADD', k, e.add, 2000)
  end
  indexing = nil
end

local function bcount(t, d)
  local k = B .. 'bn:' .. t.bid
  local f = t.s .. ':' .. (t.rc or '')
  if redis.call('HINCRBY', k, f, d) == 0 then redis.call('HDEL', k, f) end
end

local function leave(t)
  local id, st = t.id, t.s
  if st ~= 'queued' then zrem(B .. 's:' .. st, id) end
  if st == 'queued' then
    redis.call('ZREM', B .. 'r:' .. t.lv, id)
    local gk = B .. 'rg:' .. t.lv .. ':' .. t.g
    redis.call('ZREM', gk, id)
    if redis.call('EXISTS', gk) == 0 then
      redis.call('ZREM', B .. 'g:' .. t.lv, t.g)
      grouped[t.lv .. ':' .. t.g] = nil
    end
  elseif st == 'scheduled' then
    zrem(B .. 'sched', id)
  elseif st == 'running' then
    zrem(B .. 'lease', id)
  elseif FINISHED[st] then
    zrem(B .. 'fin', id)
  end
  count(t.lv, st, -1)
  if t.bid then
    bcount(t, -1)
    if not FINISHED[st] then zrem(B .. 'ba:' .. t.bid, id) end
  end
end

local function enter(t)
  local id, st = t.id, t.s
  -- the listing order of queued tasks is their lanes' (r:LEVEL), which are scored by seq too
  if st ~= 'queued' then zadd(B .. 's:' .. st, t.seq, id) end
  if st == 'queued' then
    redis.call('ZADD', B .. 'r:' .. t.lv, t.seq, id)
    redis.call('ZADD', B .. 'rg:' .. t.lv .. ':' .. t.g, t.seq, id)
    local lane_group = t.lv .. ':' .. t.g
    if not grouped[lane_group] then
      redis.call('ZADD', B .. 'g:' .. t.lv, 0, t.g)
      grouped[lane_group] = true
    end
    work = true
  elseif st == 'scheduled' then
    zadd(B .. 'sched', t.ra, id)
  elseif st == 'running' then
    zadd(B .. 'lease', t.le, id)
  end
  if FINISHED[st] then
    zadd(B .. 'fin', t.fa, id)
    if t.ea then zrem(B .. 'dead', id) end
  elseif t.ea then
    zadd(B .. 'dead', t.ea, id)
  end
  count(t.lv, st, 1)
  if t.bid then
    bcount(t, 1)
    if not FINISHED[st] then zadd(B .. 'ba:' .. t.bid, t.seq, id) end
  end
end

"""

_STATE = r"""
-- what the scripts read of a task to move it (DECIDE is what Python decides on)
local STATE = {'s', 'lv', 'g', 'bid', 'rc', 'seq', 'ra', 'le', 'fa', 'ea', 'li', 'cr', 'at',
               'ls', 'cb'}
local DECIDE = {'s', 'li', 'le', 'cr', 'at', 'x', 'bo', 'ls'}

local function load(id)
  local v = redis.call('HMGET', tkey(id), unpack(STATE))
  if not v[1] then return nil end
  local t = {id = id}
  for i = 1, #STATE do
    if v[i] then t[STATE[i]] = v[i] end
  end
  return t
end

"""

_ROW = r"""
-- a task as its reply row (codec.ROW): the Task's fields in order, nil for none
local ROW = {'id', 's', 'lv', 'x', 'd', 'cb', 'bid', 'g', 'md', 'at', 'bo', 'ra', 'sa', 'fa',
             'ea', 'rs', 'er', 'li', 'wi', 'le', 'cr'}
local function row(id) return redis.call('HMGET', tkey(id), unpack(ROW)) end
"""

_SETTLE = r"""
-- Write an outcome {s, ra, fa, rs, rc, er} ('' for none): the lease ends, the task moves.
local function settle(t, o)
  leave(t)
  local k = tkey(t.id)
  redis.call('HDEL', k, 'li', 'le', 'ls', 'cba')
  t.li, t.le, t.ls = nil, nil, nil
  local set = {'s', o.s}
  if o.fa ~= '' then
    set[#set + 1] = 'fa'; set[#set + 1] = o.fa; t.fa = o.fa
  else
    redis.call('HDEL', k, 'fa'); t.fa = nil
  end
  if o.rs ~= '' then
    set[#set + 1] = 'rs'; set[#set + 1] = o.rs
    set[#set + 1] = 'rc'; set[#set + 1] = o.rc; t.rc = o.rc
  end
  if o.er ~= '' then set[#set + 1] = 'er'; set[#set + 1] = o.er end
  if o.ra ~= '' then set[#set + 1] = 'ra'; set[#set + 1] = o.ra; t.ra = o.ra end
  redis.call('HSET', k, unpack(set))
  t.s = o.s
  enter(t)
  if FINISHED[o.s] then
    redis.call('PUBLISH', P .. ':t:' .. t.id, o.s)
    if t.cb then
      -- the outbox: a task with a callback URL owes one when it ends
      redis.call('ZADD', B .. 'cb', t.fa, t.id)
      redis.call('PUBLISH', P .. ':cb', '')
    end
  elseif t.cb then
    redis.call('ZREM', B .. 'cb', t.id)
  end
end

-- Does the task still stand where a decision was made? Status, lease id, cancel flag,
-- attempts, lease expiry ('*': any), and unexpired at ('': no check).
local function matches(t, es, el, ec, ea, ele, now)
  if es ~= '*' and t.s ~= es then return false end
  if el ~= '*' and (t.li or '') ~= el then return false end
  if ec ~= '*' and (t.cr or '0') ~= ec then return false end
  if ea ~= '*' and (t.at or '0') ~= ea then return false end
  if ele ~= '*' and (t.le or '') ~= ele then return false end
  if now ~= '' and t.le and tonumber(t.le) <= tonumber(now) then return false end
  return true
end

"""

_LIB = _CORE + _COUNTS + _INDEXES + _STATE + _ROW + _SETTLE

# ARGV: prefix, the tasks' small fields (a MessagePack array, codec.put_args: per task id lv
# s x cb bid g bo ra ea fp, all text, numbers as stored; optional text is '' for None, else
# 'v' + text), then per task its data JSON and metadata JSON ('' for none), which go
# apart as they are bytes of any size. Returns 1/0 per task (created).
PUT = (
    _CORE
    + _COUNTS
    + _INDEXES
    + r"""
local meta = redis.call('HMGET', B .. 'meta', 'paused', 'seq')
if not meta[1] then return redis.error_reply('NOQUEUE') end
local rows = cmsgpack.unpack(ARGV[2])
local n = #rows
local seen = {}
local created = {}
for i = 1, n do
  local id, fp = rows[i][1], rows[i][11]
  local known = seen[id]
  if known == nil then
    local v = redis.call('HMGET', tkey(id), 's', 'fp')  -- fp is not stored when ''
    if v[1] then known = v[2] or '' end
  end
  if known then
    if known ~= fp then return redis.error_reply('CONFLICT ' .. id) end
    created[i] = 0
  else
    seen[id] = fp
    created[i] = 1
  end
end
deferred = {}
local time = redis.call('TIME')
local seq = tonumber(time[1]) * 1000000 + tonumber(time[2])
local last = tonumber(meta[2] or '0')
if seq <= last then seq = last + 1 end
local stored = false
for i = 1, n do
  if created[i] == 1 then
    local r = rows[i]
    local id, md = r[1], ARGV[2 + 2 * i]
    local t = {id = id, lv = r[2], s = r[3], g = r[7], seq = seq, ra = r[9]}
    local f = {'id', id, 's', t.s, 'lv', t.lv, 'seq', seq, 'x', r[4], 'd', ARGV[1 + 2 * i],
               'g', t.g, 'bo', r[8], 'ra', t.ra}
    if r[5] ~= '' then t.cb = string.sub(r[5], 2); f[#f + 1] = 'cb'; f[#f + 1] = t.cb end
    if r[6] ~= '' then
      t.bid = string.sub(r[6], 2); f[#f + 1] = 'bid'; f[#f + 1] = t.bid
      redis.call('ZADD', B .. 'b:' .. t.bid, seq, id)
    end
    if md ~= '' then f[#f + 1] = 'md'; f[#f + 1] = md end
    if r[10] ~= '' then t.ea = r[10]; f[#f + 1] = 'ea'; f[#f + 1] = t.ea end
    if r[11] ~= '' then f[#f + 1] = 'fp'; f[#f + 1] = r[11] end
    redis.call('HSET', tkey(id), unpack(f))
    enter(t)
    seq = seq + 1
    stored = true
  end
end
if stored then redis.call('HSET', B .. 'meta', 'seq', seq - 1) end
write_counts()
flush()
return created
"""
)

# Leasing queued tasks: _OPEN for CLAIM and TAKE, _LEASE (one task) for CLAIM; TAKE moves
# whole lanes at once. ARGV: prefix, now, lease_expires_at,
# lease_s, worker_id, one ('1': only while the queue runs no task), most (how many to lease
# at most), `most` lease ids concatenated (ids.new_lease_ids), then the script's own
# arguments from ARGV[9].
_OPEN = r"""
local LEASE_ID = 32  -- domain/ids.py LEASE_ID_LENGTH
local function open_for_take()
  if redis.call('HGET', B .. 'meta', 'paused') ~= '0' then return false end
  return not (ARGV[6] == '1' and redis.call('ZCARD', B .. 'lease') > 0)
end
"""

_LEASE = r"""
-- Lease the queued task `id` with the n-th lease id; its reply row.
local function lease(id, n)
  local t = load(id)
  leave(t)
  local at = tonumber(t.at or '0') + 1
  local li = string.sub(ARGV[8], (n - 1) * LEASE_ID + 1, n * LEASE_ID)
  redis.call('HSET', tkey(id), 's', 'running', 'at', at, 'sa', ARGV[2], 'li', li,
             'wi', ARGV[5], 'le', ARGV[3], 'ls', ARGV[4])
  t.s = 'running'
  t.le = ARGV[3]
  enter(t)
  return row(id)
end
"""

# ARGV: as _OPEN, then the task ids in the order chosen. Leases, in that order, each that
# is still queued, up to `most`; returns their rows, in order.
CLAIM = (
    _LIB
    + _OPEN
    + _LEASE
    + r"""
if not open_for_take() then return {} end
local most = tonumber(ARGV[7])
local out = {}
deferred = {}
for i = 9, #ARGV do
  local id = ARGV[i]
  -- most candidates passed over were taken by another server: look at the status first
  if redis.call('HGET', tkey(id), 's') == 'queued' then
    out[#out + 1] = lease(id, #out + 1)
    if #out >= most then break end
  end
end
write_counts()
return out
"""
)

# ARGV: as _OPEN, then levels, most urgent first. The take of the strategies that choose
# the oldest queued tasks of one queue's lanes in a fixed lane order (fifo, active_passive
# and round_robin over one source, active_passive and sequential over one queue): leases up
# to `most` of them, lane by lane, oldest first; returns their rows, in order.
# What leave() and enter() do for queued -> running, done for all the tasks at once: each
# lane's tasks leave it in one ZPOPMIN (and their groups' lanes in one ZREM per group), and
# enter the running listing and the lease index in one ZADD each. A task's deadline and its
# batch's unfinished set stay as they were (enter would write the same scores again).
TAKE = (
    _CORE
    + _COUNTS
    + _ROW
    + _OPEN
    + r"""
if not open_for_take() then return {} end
local most = tonumber(ARGV[7])
local now, le, ls, wi = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local FIELDS = {unpack(ROW)}
FIELDS[#FIELDS + 1] = 'rc'
local out = {}
local running, leased = {}, {}
local batches = {}  -- batch id -> {status:code field -> tasks leaving it}
deferred = {}
for i = 9, #ARGV do
  local need = most - #out
  if need <= 0 then break end
  local lv = ARGV[i]
  local popped = redis.call('ZPOPMIN', B .. 'r:' .. lv, need)
  local groups = {}  -- group -> its tasks taken
  for j = 1, #popped, 2 do
    local id, seq = popped[j], popped[j + 1]
    local k = tkey(id)
    local v = redis.call('HMGET', k, unpack(FIELDS))
    local rc = v[#FIELDS]
    v[#FIELDS] = nil
    local ids = groups[v[8]]
    if not ids then ids = {}; groups[v[8]] = ids end
    ids[#ids + 1] = id
    local at = tostring(tonumber(v[10] or '0') + 1)
    local li = string.sub(ARGV[8], #out * LEASE_ID + 1, (#out + 1) * LEASE_ID)
    redis.call('HSET', k, 's', 'running', 'at', at, 'sa', now, 'li', li, 'wi', wi, 'le', le,
               'ls', ls)
    running[#running + 1] = seq; running[#running + 1] = id
    leased[#leased + 1] = le; leased[#leased + 1] = id
    if v[7] then
      local moved = batches[v[7]] or {}
      batches[v[7]] = moved
      local f = 'queued:' .. (rc or '')
      moved[f] = (moved[f] or 0) + 1
    end
    v[2], v[10], v[13], v[18], v[19], v[20] = 'running', at, now, li, wi, le
    out[#out + 1] = v
  end
  local n = #popped / 2
  if n > 0 then
    count(lv, 'queued', -n)
    count(lv, 'running', n)
  end
  for g, ids in pairs(groups) do
    local gk = B .. 'rg:' .. lv .. ':' .. g
    redis.call('ZREM', gk, unpack(ids))
    if redis.call('EXISTS', gk) == 0 then redis.call('ZREM', B .. 'g:' .. lv, g) end
  end
end
if #running > 0 then
  redis.call('ZADD', B .. 's:running', unpack(running))
  redis.call('ZADD', B .. 'lease', unpack(leased))
end
for bid, moved in pairs(batches) do
  local k = B .. 'bn:' .. bid
  for f, n in pairs(moved) do
    if redis.call('HINCRBY', k, f, -n) == 0 then redis.call('HDEL', k, f) end
    redis.call('HINCRBY', k, 'running:' .. string.sub(f, 8), n)
  end
end
write_counts()
return out
"""
)

SETTLE_FIELDS = 15

# ARGV: prefix, mode ('full': answer each task's row, else its status), then per item
# (SETTLE_FIELDS): id, action (settle | requeue | extend | mark), the state the decision was
# made on (status, lease id, cancel flag, attempts, lease expiry: '*' for any; unexpired at:
# '' for no check), the outcome (status, run_at, completed_at, result, result code, error:
# '' for none), and for extend the new expiry ('' for the unexpired-at time + the lease's
# own length).
# Per item: {'ok', row or status}, {'moved', the state now (DECIDE)} or {'missing'}.
SETTLE = (
    _LIB
    + r"""
local full = ARGV[2] == 'full'
local out = {}
deferred = {}
indexing = {}
for i = 3, #ARGV, 15 do
  local id, act = ARGV[i], ARGV[i + 1]
  local t = load(id)
  local k = tkey(id)
  if not t then
    out[#out + 1] = {'missing'}
  elseif not matches(t, ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6],
                     ARGV[i + 7]) then
    out[#out + 1] = {'moved', redis.call('HMGET', k, unpack(DECIDE))}
  elseif act == 'extend' then
    local le = ARGV[i + 14]
    if le == '' then le = tonumber(ARGV[i + 7]) + tonumber(t.ls or '0') end
    redis.call('HSET', k, 'le', le)
    redis.call('ZADD', B .. 'lease', le, id)
    out[#out + 1] = {'ok', redis.call('HGET', k, 'le')}
  else
    if act == 'mark' then
      redis.call('HSET', k, 'cr', '1')
      redis.call('PUBLISH', P .. ':t:' .. id, 'cancel')
    else
      if act == 'requeue' then
        redis.call('HDEL', k, 'at', 'er')
      end
      settle(t, {s = ARGV[i + 8], ra = ARGV[i + 9], fa = ARGV[i + 10], rs = ARGV[i + 11],
                 rc = ARGV[i + 12], er = ARGV[i + 13]})
    end
    if full then
      out[#out + 1] = {'ok', row(id)}
    else
      out[#out + 1] = {'ok', t.s}
    end
  end
end
write_counts()
write_indexes()
flush()
return out
"""
)

# ARGV: prefix, now, limit, the deadline outcome (status, completed_at, error), then the ids
# of batches still running (their finished tasks are kept: the output file is made from
# them). Promotes due tasks, expires deadlines, purges past retention and reads the expired
# leases (the domain decides where each goes). Returns {promoted, expired, purged ids, emptied batch ids,
# {id, DECIDE...} per expired lease, next due scores, 1 if a limit was hit}.
SWEEP = (
    _LIB
    + r"""
local now, limit = ARGV[2], tonumber(ARGV[3])
local full = 0
local due = redis.call('ZRANGEBYSCORE', B .. 'sched', '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(due) do
  local t = load(id)
  leave(t)
  redis.call('HSET', tkey(id), 's', 'queued')
  t.s = 'queued'
  enter(t)
end
if #due == limit then full = 1 end
local past = redis.call('ZRANGEBYSCORE', B .. 'dead', '-inf', now, 'LIMIT', 0, limit)
for _, id in ipairs(past) do
  settle(load(id), {s = ARGV[4], ra = '', fa = ARGV[5], rs = '', rc = '', er = ARGV[6]})
end
if #past == limit then full = 1 end
local purged, emptied = {}, {}
local keep = {}
for i = 7, #ARGV do keep[ARGV[i]] = true end
local ret = redis.call('HGET', B .. 'meta', 'ret')
if ret then
  local cutoff = tonumber(now) - tonumber(ret)
  local kept = 0
  while #purged < limit do
    local old = redis.call('ZRANGEBYSCORE', B .. 'fin', '-inf', cutoff, 'LIMIT', kept, limit)
    if #old == 0 then break end
    for _, id in ipairs(old) do
      local t = load(id)
      if t.bid and keep[t.bid] then
        kept = kept + 1
      elseif #purged < limit then
        leave(t)
        if t.cb then redis.call('ZREM', B .. 'cb', id) end
        if t.bid then
          local bk = B .. 'b:' .. t.bid
          redis.call('ZREM', bk, id)
          if redis.call('EXISTS', bk) == 0 then emptied[#emptied + 1] = t.bid end
        end
        redis.call('DEL', tkey(id), B .. 'e:' .. id)
        purged[#purged + 1] = id
      end
    end
  end
  if #purged == limit then full = 1 end
end
local lapsed = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', B .. 'lease', '-inf', now, 'LIMIT', 0, limit)) do
  lapsed[#lapsed + 1] = {id, redis.call('HMGET', tkey(id), unpack(DECIDE))}
end
if #lapsed == limit then full = 1 end
local nxt = {}
for _, z in ipairs({'sched', 'dead'}) do
  local first = redis.call('ZRANGE', B .. z, 0, 0, 'WITHSCORES')
  if first[2] then nxt[#nxt + 1] = first[2] end
end
-- the leases read above are settled next, so the next one due is the first still current
local first = redis.call('ZRANGEBYSCORE', B .. 'lease', '(' .. now, '+inf', 'WITHSCORES',
                         'LIMIT', 0, 1)
if first[2] then nxt[#nxt + 1] = first[2] end
flush()
return {#due, #past, purged, emptied, lapsed, nxt, full}
"""
)

# ARGV: prefix, limit, then levels. The state a take strategy reads: {0} unknown queue,
# {1} paused, else {2, running, {level, queued, {id, seq, ...}}...} for lanes with work.
SNAPSHOT = r"""
local B = KEYS[1]
local paused = redis.call('HGET', B .. 'meta', 'paused')
if not paused then return {0} end
if paused ~= '0' then return {1} end
local limit = tonumber(ARGV[2])
local out = {2, redis.call('ZCARD', B .. 'lease')}
local queued = {}  -- level -> queued count, from the counts hash: one read for all levels
local counts = redis.call('HGETALL', B .. 'n')
for j = 1, #counts, 2 do
  local lv, st = string.match(counts[j], '^(%d+):(.+)$')
  if st == 'queued' then queued[lv] = tonumber(counts[j + 1]) end
end
for i = 3, #ARGV do
  local k = B .. 'r:' .. ARGV[i]
  local n = queued[ARGV[i]] or 0
  if n > 0 then
    local oldest = {}
    if limit > 0 then oldest = redis.call('ZRANGE', k, 0, limit - 1, 'WITHSCORES') end
    out[#out + 1] = {ARGV[i], n, oldest}
  end
end
return out
"""

# ARGV: prefix, id, lease id, now, then the encoded events. Appends under the lease.
# {'ok', last event id}, {'moved', DECIDE...} or {'missing'}.
APPEND_EVENTS = (
    _LIB
    + r"""
local id = ARGV[2]
local t = load(id)
if not t then return {'missing'} end
if not matches(t, 'running', ARGV[3], '*', '*', '*', ARGV[4]) then
  return {'moved', redis.call('HMGET', tkey(id), unpack(DECIDE))}
end
local n = redis.call('RPUSH', B .. 'e:' .. id, unpack(ARGV, 5))
redis.call('PUBLISH', P .. ':t:' .. id, 'event')
return {'ok', n}
"""
)

# ARGV: prefix, after (seq), limit, check ('1': the queue must exist), then key suffixes of
# sorted sets scored by seq ('queued': every level's lane). Returns {seq, fields} for up to `limit` tasks after `after`,
# merged in seq order.
LIST = r"""
local B = KEYS[1]
if ARGV[4] == '1' and not redis.call('HGET', B .. 'meta', 'config') then
  return redis.error_reply('NOQUEUE')
end
local limit = tonumber(ARGV[3])
local indexes = {}
for i = 5, #ARGV do
  if ARGV[i] == 'queued' then  -- queued tasks are listed through their lanes
    local counts = redis.call('HGETALL', B .. 'n')
    for j = 1, #counts, 2 do
      local lv, st = string.match(counts[j], '^(%d+):(.+)$')
      if st == 'queued' then indexes[#indexes + 1] = 'r:' .. lv end
    end
  else
    indexes[#indexes + 1] = ARGV[i]
  end
end
local all = {}
for _, index in ipairs(indexes) do
  local r = redis.call('ZRANGEBYSCORE', B .. index, '(' .. ARGV[2], '+inf', 'WITHSCORES',
                       'LIMIT', 0, limit)
  for j = 1, #r, 2 do all[#all + 1] = {tonumber(r[j + 1]), r[j], r[j + 1]} end
end
if #indexes > 1 then table.sort(all, function(x, y) return x[1] < y[1] end) end
local out = {}
for i = 1, math.min(#all, limit) do
  out[i] = {all[i][3], redis.call('HGETALL', B .. 't:' .. all[i][2])}
end
return out
"""

# ARGV: prefix. The queue's config, counts ("LEVEL:STATUS", n, ...) and, per level with
# queued tasks, the run_at of its oldest: {config, counts, {level, run_at, ...}}.
STATS = r"""
local B = KEYS[1]
local counts = redis.call('HGETALL', B .. 'n')
local oldest = {}
for i = 1, #counts, 2 do
  local lv, st = string.match(counts[i], '^(%d+):(.+)$')
  if st == 'queued' and tonumber(counts[i + 1]) > 0 then
    local first = redis.call('ZRANGE', B .. 'r:' .. lv, 0, 0)
    if first[1] then
      oldest[#oldest + 1] = lv
      oldest[#oldest + 1] = redis.call('HGET', B .. 't:' .. first[1], 'ra')
    end
  end
end
return {redis.call('HGET', B .. 'meta', 'config'), counts, oldest}
"""

# ARGV: prefix, config JSON, paused ('0'/'1'), retention_s, the config it replaces ('' for
# none), wake ('1': the queue resumed). Compare and set: {1} stored, {0, current} moved,
# {-1} the queue is being obliterated.
REGISTER = (
    _CORE
    + r"""
local meta = B .. 'meta'
if redis.call('HGET', meta, 'gone') then return {-1} end
local cur = redis.call('HGET', meta, 'config')
if (cur or '') ~= ARGV[5] then return {0, cur} end
redis.call('HSET', meta, 'config', ARGV[2], 'paused', ARGV[3], 'ret', ARGV[4])
if ARGV[6] == '1' then work = true end
flush()
return {1}
"""
)

# ARGV: prefix, force. Marks the queue gone (no put, take or read finds it any more) and
# answers its task count; the engine then deletes its keys and last the meta hash.
OBLITERATE = r"""
local B = KEYS[1]
local meta = B .. 'meta'
if not redis.call('HGET', meta, 'config') then return redis.error_reply('NOQUEUE') end
if ARGV[2] ~= '1' and redis.call('ZCARD', B .. 'lease') > 0 then
  return redis.error_reply('RUNNING')
end
local total = 0
for _, v in ipairs(redis.call('HVALS', B .. 'n')) do total = total + tonumber(v) end
redis.call('HDEL', meta, 'config', 'paused', 'ret')
redis.call('HSET', meta, 'gone', '1')
return total
"""

# ARGV: prefix, now, hold until, limit. Hands out due callbacks, each held until `hold
# until`; {attempt, fields} each.
CLAIM_CALLBACKS = r"""
local B = KEYS[1]
local ids = redis.call('ZRANGEBYSCORE', B .. 'cb', '-inf', ARGV[2], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(ids) do
  local k = B .. 't:' .. id
  redis.call('ZADD', B .. 'cb', ARGV[3], id)
  out[#out + 1] = {redis.call('HINCRBY', k, 'cba', 1), redis.call('HGETALL', k)}
end
return out
"""

# ARGV: prefix, id, retry at ('' : delivered or given up). Only a callback still owed moves.
SETTLE_CALLBACK = r"""
local B = KEYS[1]
if redis.call('ZSCORE', B .. 'cb', ARGV[2]) then
  if ARGV[3] == '' then
    redis.call('ZREM', B .. 'cb', ARGV[2])
  else
    redis.call('ZADD', B .. 'cb', ARGV[3], ARGV[2])
  end
end
return 1
"""

# ARGV: prefix, batch id, limit. The state of up to `limit` of the batch's unfinished tasks
# that a cancel still has to act on (running ones already asked to stop are skipped):
# {id, DECIDE...} each.
BATCH_TO_CANCEL = (
    _CORE
    + _STATE
    + r"""
local k = B .. 'ba:' .. ARGV[2]
local limit = tonumber(ARGV[3])
local out = {}
local start = 0
while #out < limit do
  local ids = redis.call('ZRANGE', k, start, start + 499)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local v = redis.call('HMGET', tkey(id), unpack(DECIDE))
    if v[1] and not (v[1] == 'running' and v[4] == '1') and #out < limit then
      out[#out + 1] = {id, v}
    end
  end
  start = start + 500
end
return out
"""
)

# KEYS[1]: the task index. ARGV: pairs (task id, queue). Reserves each id for its queue, all
# or none: {} when done, {id, other queue} when an id belongs to another queue.
RESERVE = r"""
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if cur and cur ~= ARGV[i + 1] then return {ARGV[i], cur} end
end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return {}
"""

# KEYS[1]: the task index. ARGV: id, expected queue, new queue. Repoints a stale entry.
REPOINT = r"""
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
  return 1
end
return 0
"""

# ---- records: KEYS[1] is the kind's base `P:{r:KIND}:` ----

# ARGV: id, project, created_at, body, active. 1 stored, 0 exists.
RECORD_PUT = r"""
local R = KEYS[1]
local k = R .. 'rec:' .. ARGV[1]
if redis.call('EXISTS', k) == 1 then return 0 end
redis.call('HSET', k, 'project', ARGV[2], 'ca', ARGV[3], 'body', ARGV[4], 'active', ARGV[5],
           'version', 1)
redis.call('ZADD', R .. 'p:' .. ARGV[2], 0, ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', R .. 'active', 0, ARGV[1]) end
return 1
"""

# ARGV: id, body, active, expected version. {1, fields}, {0, version} moved, {-1} missing.
RECORD_REPLACE = r"""
local R = KEYS[1]
local k = R .. 'rec:' .. ARGV[1]
local v = redis.call('HGET', k, 'version')
if not v then return {-1} end
if v ~= ARGV[4] then return {0, v} end
redis.call('HSET', k, 'body', ARGV[2], 'active', ARGV[3])
redis.call('HINCRBY', k, 'version', 1)
if ARGV[3] == '1' then
  redis.call('ZADD', R .. 'active', 0, ARGV[1])
else
  redis.call('ZREM', R .. 'active', ARGV[1])
end
return {1, redis.call('HGETALL', k)}
"""

# ARGV: id. 1 deleted, 0 missing.
RECORD_DELETE = r"""
local R = KEYS[1]
local k = R .. 'rec:' .. ARGV[1]
local project = redis.call('HGET', k, 'project')
if not project then return 0 end
redis.call('DEL', k)
redis.call('ZREM', R .. 'p:' .. project, ARGV[1])
redis.call('ZREM', R .. 'active', ARGV[1])
return 1
"""

# ARGV: index suffix ('p:PROJECT' or 'active'), 'asc' or 'desc', after ('' for the start),
# limit. {id, fields} each, in id order.
RECORD_PAGE = r"""
local R = KEYS[1]
local z = R .. ARGV[1]
local limit = tonumber(ARGV[4])
local ids
if ARGV[2] == 'asc' then
  local from = ARGV[3] == '' and '-' or '(' .. ARGV[3]
  ids = redis.call('ZRANGEBYLEX', z, from, '+', 'LIMIT', 0, limit)
else
  local from = ARGV[3] == '' and '+' or '(' .. ARGV[3]
  ids = redis.call('ZREVRANGEBYLEX', z, from, '-', 'LIMIT', 0, limit)
end
local out = {}
for i, id in ipairs(ids) do out[i] = {id, redis.call('HGETALL', R .. 'rec:' .. id)} end
return out
"""

ALL = {
    "put": PUT,
    "claim": CLAIM,
    "take": TAKE,
    "settle": SETTLE,
    "sweep": SWEEP,
    "snapshot": SNAPSHOT,
    "append_events": APPEND_EVENTS,
    "list": LIST,
    "stats": STATS,
    "register": REGISTER,
    "obliterate": OBLITERATE,
    "claim_callbacks": CLAIM_CALLBACKS,
    "settle_callback": SETTLE_CALLBACK,
    "batch_to_cancel": BATCH_TO_CANCEL,
    "reserve": RESERVE,
    "repoint": REPOINT,
    "record_put": RECORD_PUT,
    "record_replace": RECORD_REPLACE,
    "record_delete": RECORD_DELETE,
    "record_page": RECORD_PAGE,
}
