"""The switch-writing lease: which netmaster is OpenFlow MASTER, with a fencing token.

Every netmaster connects to every switch; only the holder of this lease asks the
switches for the MASTER role, the others stay SLAVE (OVS then refuses their
flow_mods and sends them no packet-ins).  The lease is a Redis key written with
``SET NX PX`` semantics inside a Lua script, together with a generation counter
that only grows (``INCR``): each acquisition gets a new generation, which the
holder sends as the ``generation_id`` of its ``OFPT_ROLE_REQUEST``.  OVS refuses
a MASTER request whose generation is older than the newest it has seen
(``OFPRRFC_STALE``), so a netmaster that lost the lease and comes back late
cannot take a switch back: the generation is the fencing token.

With Redis Sentinel an acquisition counts only once a replica has it
(:meth:`Store.eval`'s ``replicate``: ``WAIT`` after the script): otherwise a
primary that dies right after ``INCR`` could be replaced by a replica that never
saw that generation, and the next acquisition would hand the same generation to
a second holder — two MASTERs that OVS cannot tell apart.  The same holds for a
holder that reads back its own lease without having had it confirmed (the
``WAIT`` after its acquisition timed out): its first "renewal" waits too.
Renewals of a confirmed lease do not wait (they only extend a TTL; losing one in
a failover only makes the lease expire, which is safe).

Timing (why these numbers): the lease lives :attr:`Lease.TTL` (1 s) in Redis and
the holder renews it every :attr:`Lease.RENEW` (0.25 s), so three renewals in a
row may be lost (a busy reactor, a Redis hiccup) before it is at risk.  The
holder counts its lease from the moment it *sent* the renewal that Redis
accepted, and gives it up :attr:`Lease.SAFETY` before that renewal's TTL ends;
Redis counts from when it *ran* the script, which is later.  So a holder cut off
from Redis has stopped writing (its switches demoted to SLAVE locally) before
the key can expire and before any standby can acquire it.  Standbys try every
:attr:`RENEW` too, so a dead leader is replaced within TTL + RENEW (~1.25 s)
plus one role round trip and the flow read-back: inside the 2 s target.

One lease for all switches rather than a shard per netmaster: every netmaster
compiles the whole state anyway (a standby must be able to take any switch at
once), the writing is cheap next to that, and one lease means one decision per
failure, one generation in every switch, and one place to look ("who is
master?").  Sharding would split only the flow writes, at the cost of a lease
per shard and partial takeovers.

Losing the lease to nobody (:attr:`Lease.continued`): a busy holder can miss its
renewal deadline and demote itself while the key is still its own in Redis (or
expired with no standby to take it).  Its next acquisition then has the same
generation (the key was still ours) or exactly the next one (every acquisition
``INCR``\s it): no other netmaster can have been MASTER of any switch in
between, so what the holder believed of each switch is still true and the
controller keeps those beliefs instead of reading every switch back.  Any sign
of another holder (a reply naming another owner, a generation past ours, a
switch saying ours is stale) marks the gap :attr:`Lease.interrupted`, and the
next acquisition is a takeover like any other.

Why the TTL stays 1 s for a lone netmaster too: a lone holder cannot know that a
standby is not about to start (standbys only read the key), so a longer TTL
would be the takeover time of the first failure after one does, breaking the
2 s target exactly when it matters.  With beliefs kept across a lapse, a lone
netmaster's missed renewal costs one renewal period of SLAVE and the deltas it
held back, not a read-back storm, so there is little to gain from it either.
"""

from __future__ import annotations

import os
import socket
import uuid
from typing import Any, Callable, List, Optional

from twisted.internet import defer, task
from twisted.logger import Logger

log = Logger()

#: The lease key (``holder|generation``) and the generation counter.
LEASE_KEY = "contiv:ofp:lease"
GENERATION_KEY = "contiv:ofp:generation"

#: KEYS: lease, generation.  ARGV: holder id, ttl ms, "1" to acquire if free ("0": renew only).
#: Returns {held (0/1), generation, holder or "", acquired now (0/1)}.
LEASE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local h, g = string.match(cur, '^(.*)|(%d+)$')
  if h == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, tonumber(g), h, 0}
  end
  return {0, tonumber(g) or 0, h or '', 0}
end
local g = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[3] ~= '1' then
  return {0, g, '', 0}
end
g = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. g, 'PX', ARGV[2])
return {1, g, ARGV[1], 1}
"""

#: KEYS: lease.  ARGV: holder id.  Deletes the lease only if we hold it.
RELEASE_SCRIPT = """
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^(.*)|%d+$') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: generation.  ARGV: a generation a switch has seen.  After a Redis failover
#: lost the newest generation, the next acquisition must still be newer than it.
RAISE_SCRIPT = """
local g = tonumber(redis.call('GET', KEYS[1]) or '0')
if g < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
  return tonumber(ARGV[1])
end
return g
"""


def _text(v: Any) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def holder_id() -> str:
    """A holder id unique to this process: host, pid and a random part (a restarted
    netmaster is a new holder; it never mistakes its previous life's lease for its own)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Lease:
    """Acquire-or-renew loop for the switch-writing lease.

    ``on_change(held, generation)`` is called whenever :attr:`held` flips (and
    ``on_tick()`` after every attempt, so the caller can re-assert switch roles
    that were refused).  :meth:`valid` is the check before each write.
    """

    TTL = 1.0
    RENEW = 0.25
    SAFETY = 0.2

    def __init__(self, store: Any, holder: Optional[str] = None, clock: Any = None,
                 ttl: Optional[float] = None, renew: Optional[float] = None,
                 on_change: Optional[Callable[[bool, int], None]] = None,
                 on_tick: Optional[Callable[[], None]] = None):
        if clock is None:
            from twisted.internet import reactor as clock  # type: ignore[no-redef]
        self.store = store
        self.holder = holder or holder_id()
        self.clock = clock
        self.ttl = ttl if ttl is not None else self.TTL
        self.renew = renew if renew is not None else self.RENEW
        if self.renew * 3 > self.ttl:
            raise ValueError(f"lease renewal every {self.renew}s does not fit three times in "
                             f"its TTL {self.ttl}s")
        self.safety = min(self.SAFETY, self.ttl / 4)
        self.on_change = on_change
        self.on_tick = on_tick
        #: whether we hold the lease (and may write to switches) right now
        self.held = False
        #: our generation while held; the newest one seen in Redis otherwise
        self.generation = 0
        #: who holds it (as last read), "" if nobody
        self.owner = ""
        self._expires = 0.0
        self._deadline: Any = None
        self._loop: Optional[task.LoopingCall] = None
        self._inflight = False
        self._sent = 0.0
        self._due = 0.0
        self._stopping = False
        self._failing = ""
        #: the generation of our last holding (0: never held)
        self.last_held = 0
        #: since we last held the lease, another holder was seen (or a switch said our
        #: generation is stale): the next acquisition is not a continuation
        self.interrupted = False
        #: the current (or last) acquisition continues our previous holding with nobody
        #: in between (see the module doc): beliefs about the switches still hold
        self.continued = False
        #: counts for tests and tools: acquisitions, losses by expiry
        self.acquired = 0
        self.expired = 0
        self.history: List[tuple] = []

    # -- life cycle --------------------------------------------------------
    def start(self) -> None:
        self._loop = task.LoopingCall(self._tick)
        self._loop.clock = self.clock
        self._loop.start(self.renew, now=True)

    async def stop(self) -> None:
        """Stop renewing and hand the lease back (a standby takes over at once, not
        after the TTL); the switches are demoted by the caller first."""
        self._stopping = True
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        was = self.held
        self._set(False, self.generation)
        if was:
            try:
                d = defer.ensureDeferred(self._eval(RELEASE_SCRIPT, [LEASE_KEY], [self.holder]))
                await d.addTimeout(1.0, self.clock)
            except Exception as e:  # noqa: BLE001 - it expires by itself within the TTL
                log.info("could not hand back the switch lease ({err}); it expires in {ttl:g}s",
                         err=e, ttl=self.ttl)

    def valid(self) -> bool:
        """Whether we hold the lease now (its local deadline has not passed)."""
        return self.held and self.clock.seconds() < self._expires

    # -- the loop ----------------------------------------------------------
    async def _eval(self, script: str, keys: List[str], args: List[Any],
                    replicate: Optional[Callable[[Any], bool]] = None) -> Any:
        return await self.store.eval("EVAL lease", script, keys, args, replicate=replicate)

    def _must_replicate(self, reply: Any) -> bool:
        """Whether this answer makes us (newly) the holder: then it must be on a
        replica before we act on it.  A fresh acquisition (the generation bumped) or
        our own lease read back while we do not count it as held yet (its
        acquisition was never confirmed)."""
        try:
            held, acquired = int(reply[0]), int(reply[3])
        except (IndexError, TypeError, ValueError):
            return True
        return bool(held) and (bool(acquired) or not self.held)

    def _tick(self) -> None:
        if self._inflight or self._stopping:
            return
        self._inflight = True
        sent = self._sent = self.clock.seconds()
        d = defer.ensureDeferred(self._eval(LEASE_SCRIPT, [LEASE_KEY, GENERATION_KEY],
                                            [self.holder, int(self.ttl * 1000), "1"],
                                            replicate=self._must_replicate))
        d.addCallbacks(lambda r: self._answered(sent, r), self._failed)
        d.addBoth(self._done)

    def _done(self, _: Any) -> None:
        self._inflight = False
        if self.on_tick is not None and not self._stopping:
            try:
                self.on_tick()
            except Exception:
                log.failure("lease tick callback failed")

    def _answered(self, sent: float, reply: Any) -> None:
        if self._stopping:
            return
        held, generation, owner = int(reply[0]), int(reply[1]), _text(reply[2])
        if self._failing:
            log.info("switch lease: Redis answers again")
            self._failing = ""
        self.owner = owner
        if held:
            expires = sent + self.ttl - self.safety
            if self.clock.seconds() >= expires:
                # too late to count on: let the deadline demote.  The generation was ours
                # (never used: no role request carried it); right after our last one it
                # keeps the chain (our next acquisition, one more, still continues it);
                # further on, the generations in between were someone else's
                if generation > self.last_held + 1:
                    self.interrupted = True
                elif self.last_held:
                    self.last_held = generation
                return
            self._expires = expires
            self._arm(expires)
            self._set(True, generation)
        else:
            if owner != self.holder or generation > self.last_held:
                self.interrupted = True  # someone else holds it, or held it since
            self._set(False, generation)

    def _failed(self, f: Any) -> None:
        why = f.getErrorMessage()
        if why != self._failing:
            log.warn("switch lease: cannot reach Redis ({err}); {what}", err=why,
                     what="giving up the switches when it expires" if self.held else
                     "staying SLAVE")
            self._failing = why

    def _arm(self, expires: float) -> None:
        delay = max(0.0, expires - self.clock.seconds())
        self._due = expires
        if self._deadline is not None and self._deadline.active():
            self._deadline.reset(delay)
        else:
            self._deadline = self.clock.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._deadline = None
        due = self._due
        if self.held:
            self.expired += 1
            now = self.clock.seconds()
            # why: our own reactor held up (this deadline fired late, or no renewal was
            # even sent), or Redis (a renewal sent and not answered): said once per lapse
            log.warn("switch lease not renewed within {ttl:g}s: demoting every switch to SLAVE "
                     "(renewal in flight for {inflight}; this check ran {late:.0f} ms late)",
                     ttl=self.ttl - self.safety,
                     inflight=f"{now - self._sent:.2f}s" if self._inflight else "none",
                     late=max(0.0, now - due) * 1e3 if due else 0.0)
            self._set(False, self.generation)

    def _set(self, held: bool, generation: int) -> None:
        changed = held != self.held or (held and generation != self.generation)
        self.held = held
        self.generation = max(self.generation, generation) if not held else generation
        if not held and self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
            self._deadline = None
        if changed and held:
            last = self.last_held
            self.continued = (last > 0 and not self.interrupted
                              and generation in (last, last + 1))
            self.interrupted = False
        if held:
            self.last_held = generation
        if changed:
            if held:
                self.acquired += 1
                log.info("switch lease acquired: MASTER of every switch, generation {g}",
                         g=generation)
            self.history.append((self.clock.seconds(), held, self.generation))
            if self.on_change is not None:
                self.on_change(held, self.generation)

    async def raise_generation(self, seen: int) -> None:
        """A switch said our generation is stale (Redis lost the newest one in a
        failover): move the counter past what the switch has seen and give the lease
        back, so the next acquisition (ours or another's) is newer."""
        # replicated: a failover must not lose the raised counter a second time
        await self._eval(RAISE_SCRIPT, [GENERATION_KEY], [seen], replicate=lambda _r: True)
        self.interrupted = True  # a switch saw a newer generation than ours: someone wrote
        if self.held:
            await self._eval(RELEASE_SCRIPT, [LEASE_KEY], [self.holder])
            self._set(False, self.generation)
