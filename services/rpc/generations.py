"""Request-topic generations: a request topic is replaced by a fresh one every period, so that
none grows for the life of a deployment.

Tansu's in-memory storage never drops a record (retention is accepted but not enforced, and
DeleteRecords is not implemented), and each fetch lists every batch its partition ever got: a
request topic that lives for hours makes every fetch slower and the broker busier, until
request/reply stalls. Deleting a topic is the one way to free it. So with a period P
(`CROSSREC_RPC_REQUEST_TOPIC_SECONDS`), generation g = ⌊now / P⌋ of request topic B is the topic
`B.g<g>`, with B's partition count:

- a client sends each request to the generation of the moment it sends it (creating that topic
  first if no server has yet);
- a server joins generation g's consumer group (`<group>.g<g>`) `lead` seconds before g starts, so
  that the join (seconds, on Tansu and Kafka alike) is over when requests arrive, and reads it
  until `grace` seconds after g ends (records produced at the very end, clocks that differ);
- the topic is deleted `keep` seconds after g ends.

P = 0 keeps B itself for ever, with the group's plain name: right for Apache Kafka, whose
retention bounds a topic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Generations:
    period_s: float

    @property
    def lead_s(self) -> float:  # a join: ~3 s on Tansu (session timeout / 2), Kafka's first 3 s
        return min(8.0, self.period_s / 2)

    @property
    def grace_s(self) -> float:  # the producers' linger, clocks of machines that differ
        return min(5.0, self.period_s / 2)

    @property
    def keep_s(self) -> float:
        return self.grace_s + min(60.0, self.period_s)

    def at(self, now_ms: int) -> int:
        return int(now_ms // (self.period_s * 1000))

    def start_ms(self, generation: int) -> float:
        return generation * self.period_s * 1000

    def wanted(self, now_ms: int) -> list[int]:
        """The generations a server reads now: the current one, the next within `lead` of its
        start, the previous within `grace` of its end."""
        current = self.at(now_ms)
        out = [current]
        if now_ms >= self.start_ms(current + 1) - self.lead_s * 1000:
            out.append(current + 1)
        if now_ms <= self.start_ms(current) + self.grace_s * 1000:
            out.insert(0, current - 1)
        return out

    def deletable(self, generation: int, now_ms: int) -> bool:
        return now_ms > self.start_ms(generation + 1) + self.keep_s * 1000


def topic_of(base: str, generation: int | None) -> str:
    """The topic of a generation of request topic `base` (None: `base` itself)."""
    return base if generation is None else f"{base}.g{generation}"


def group_of(group: str, generation: int | None) -> str:
    """The consumer group of a generation's servers (None: `group` itself)."""
    return group if generation is None else f"{group}.g{generation}"


def current(period_s: float, now_ms: int) -> int | None:
    """The generation of this moment, None without generations (period 0)."""
    return Generations(period_s).at(now_ms) if period_s > 0 else None
