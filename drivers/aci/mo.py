"""APIC managed objects (MOs): the classes we use, their relative names, DN arithmetic.

An APIC object is named by its distinguished name, the path of relative names
(RNs) from the root ``uni`` (``uni/tn-T/ap-A/epg-E``).  Each class has one RN
pattern built from its naming properties (``tn-{name}``, ``subnet-[{ip}]``,
``rspathAtt-[{tDn}]``); a naming value that holds ``/`` is written in square
brackets, so DNs are split on ``/`` only outside brackets.  The table below is
the subset of the ACI object model (the "Cisco APIC Management Information
Model Reference") that contiv-sdn writes; the stand-in APIC accepts exactly
these classes and attributes, so a payload the client builds wrongly fails here
as it would on an APIC.

:class:`Mo` is the flat form the mapping and the reconciler compare: a class
and the attributes *we* set.  Everything we create carries
``annotation = MARK`` ("orchestrator:contiv-sdn", the convention Cisco's own
orchestrators use, e.g. ``orchestrator:terraform``), which is how the
reconciler tells our objects from an operator's.
"""

from __future__ import annotations

import re
import zlib
from typing import Dict, List, NamedTuple, Optional, Tuple

#: The annotation on every MO contiv-sdn creates; objects without it are never modified.
MARK = "orchestrator:contiv-sdn"

class MoClass(NamedTuple):
    name: str
    #: the classes this one may be a child of
    parents: Tuple[str, ...]
    #: RN pattern; ``{prop}`` are naming properties
    rn: str
    #: naming properties (must be set when the MO is created)
    naming: Tuple[str, ...]
    #: other configurable properties -> default value on an APIC
    props: Dict[str, str]
    #: allowed values of enumerated properties (what the stand-in checks)
    enums: Dict[str, Tuple[str, ...]] = {}


CLASSES: Dict[str, MoClass] = {c.name: c for c in (
    MoClass("polUni", (), "uni", (), {}),
    MoClass("fvTenant", ("polUni",), "tn-{name}", ("name",), {}),
    MoClass("fvCtx", ("fvTenant",), "ctx-{name}", ("name",),
            {"pcEnfPref": "enforced", "pcEnfDir": "ingress"},
            {"pcEnfPref": ("enforced", "unenforced"), "pcEnfDir": ("ingress", "egress")}),
    MoClass("fvBD", ("fvTenant",), "BD-{name}", ("name",),
            {"arpFlood": "no", "unkMacUcastAct": "proxy", "unicastRoute": "yes"},
            {"arpFlood": ("yes", "no"), "unkMacUcastAct": ("flood", "proxy"),
             "unicastRoute": ("yes", "no")}),
    MoClass("fvRsCtx", ("fvBD",), "rsctx", (), {"tnFvCtxName": ""}),
    MoClass("fvSubnet", ("fvBD", "fvAEPg"), "subnet-[{ip}]", ("ip",),
            {"scope": "private", "preferred": "no"},
            {"preferred": ("yes", "no")}),
    MoClass("fvAp", ("fvTenant",), "ap-{name}", ("name",), {}),
    MoClass("fvAEPg", ("fvAp",), "epg-{name}", ("name",),
            {"pcEnfPref": "unenforced", "prefGrMemb": "exclude"},
            {"pcEnfPref": ("enforced", "unenforced"), "prefGrMemb": ("include", "exclude")}),
    MoClass("fvRsBd", ("fvAEPg",), "rsbd", (), {"tnFvBDName": ""}),
    MoClass("fvRsDomAtt", ("fvAEPg",), "rsdomAtt-[{tDn}]", ("tDn",),
            {"instrImedcy": "lazy", "resImedcy": "lazy", "encap": "unknown"},
            {"instrImedcy": ("immediate", "lazy"), "resImedcy": ("immediate", "lazy",
                                                                   "pre-provision")}),
    MoClass("fvRsPathAtt", ("fvAEPg",), "rspathAtt-[{tDn}]", ("tDn",),
            {"encap": "", "mode": "regular", "instrImedcy": "lazy"},
            {"mode": ("regular", "native", "untagged"), "instrImedcy": ("immediate", "lazy")}),
    MoClass("fvRsNodeAtt", ("fvAEPg",), "rsnodeAtt-[{tDn}]", ("tDn",),
            {"encap": "", "mode": "regular", "instrImedcy": "lazy"},
            {"mode": ("regular", "native", "untagged"), "instrImedcy": ("immediate", "lazy")}),
    MoClass("fvRsProv", ("fvAEPg",), "rsprov-{tnVzBrCPName}", ("tnVzBrCPName",),
            {"prio": "unspecified"}),
    MoClass("fvRsCons", ("fvAEPg",), "rscons-{tnVzBrCPName}", ("tnVzBrCPName",),
            {"prio": "unspecified"}),
    MoClass("fvRsConsIf", ("fvAEPg",), "rsconsIf-{tnVzCPIfName}", ("tnVzCPIfName",),
            {"prio": "unspecified"}),
    MoClass("vzFilter", ("fvTenant",), "flt-{name}", ("name",), {}),
    MoClass("vzEntry", ("vzFilter",), "e-{name}", ("name",),
            {"etherT": "unspecified", "prot": "unspecified", "dFromPort": "unspecified",
             "dToPort": "unspecified", "sFromPort": "unspecified", "sToPort": "unspecified",
             "stateful": "no"},
            {"etherT": ("unspecified", "ip", "arp", "ipv4", "ipv6"),
             "prot": ("unspecified", "icmp", "igmp", "tcp", "egp", "igp", "udp", "icmpv6",
                      "eigrp", "ospfigp", "pim", "l2tp"),
             "stateful": ("yes", "no")}),
    MoClass("vzBrCP", ("fvTenant",), "brc-{name}", ("name",), {"scope": "context"},
            {"scope": ("context", "tenant", "global", "application-profile")}),
    MoClass("vzSubj", ("vzBrCP",), "subj-{name}", ("name",),
            {"revFltPorts": "yes", "consMatchT": "AtleastOne", "provMatchT": "AtleastOne"},
            {"revFltPorts": ("yes", "no")}),
    MoClass("vzRsSubjFiltAtt", ("vzSubj",), "rssubjFiltAtt-{tnVzFilterName}",
            ("tnVzFilterName",), {"action": "permit"}, {"action": ("permit", "deny")}),
    MoClass("vzCPIf", ("fvTenant",), "cif-{name}", ("name",), {}),
    MoClass("vzRsIf", ("vzCPIf",), "rsif", (), {"tDn": ""}),
    MoClass("vzAny", ("fvCtx",), "any", (), {"matchT": "AtleastOne"}),
    MoClass("vzRsAnyToCons", ("vzAny",), "rsanyToCons-{tnVzBrCPName}", ("tnVzBrCPName",),
            {"prio": "unspecified"}),
    MoClass("vzRsAnyToProv", ("vzAny",), "rsanyToProv-{tnVzBrCPName}", ("tnVzBrCPName",),
            {"prio": "unspecified"}),
)}

#: properties every class accepts (naming ones are per class)
COMMON_PROPS = ("annotation", "descr", "nameAlias")
#: classes whose MOs are part of their parent (relations, the VRF's vzAny): owned by
#: whoever owns the parent, and never a reason to keep a parent we would delete
ATTACHED = frozenset(c for c in CLASSES if c.startswith(("fvRs", "vzRs")) or c == "vzAny")

#: an ACI object name: 1-64 of these characters
ACI_NAME = re.compile(r"[a-zA-Z0-9_.:-]{1,64}")


class Mo(NamedTuple):
    """One MO as we want it: its class and the attributes we set (naming ones included)."""

    cls: str
    attrs: Dict[str, str]


def split_dn(dn: str) -> List[str]:
    """``uni/tn-a/ap-b/epg-[x/y]`` -> ``["uni", "tn-a", "ap-b", "epg-[x/y]"]``
    (a ``/`` inside brackets belongs to the RN)."""
    out: List[str] = []
    depth = 0
    cur = []
    for ch in dn:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth = max(0, depth - 1)
        if ch == "/" and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return out


def parent_dn(dn: str) -> str:
    """The DN of the parent ("" for ``uni``)."""
    return "/".join(split_dn(dn)[:-1])


def rn_of(cls: str, attrs: Dict[str, str]) -> str:
    """The RN of an MO of class ``cls`` from its naming properties."""
    meta = CLASSES[cls]
    rn = meta.rn
    for p in meta.naming:
        rn = rn.replace("{" + p + "}", attrs.get(p, ""))
    return rn


def rn_pattern(cls: str) -> "re.Pattern[str]":
    """A regex matching RNs of ``cls``, one group per naming property."""
    meta = CLASSES[cls]
    pat = re.escape(meta.rn)
    for p in meta.naming:
        inner = r"(.+)" if "[" in meta.rn else r"([^/]+)"
        pat = pat.replace(re.escape("{" + p + "}"), inner)
    return re.compile(pat)


_PATTERNS: Dict[str, "re.Pattern[str]"] = {}


def naming_from_rn(cls: str, rn: str) -> Optional[Dict[str, str]]:
    """The naming properties an RN gives for ``cls``, or None if it is not such an RN."""
    pat = _PATTERNS.get(cls)
    if pat is None:
        pat = _PATTERNS[cls] = rn_pattern(cls)
    m = pat.fullmatch(rn)
    if m is None:
        return None
    return dict(zip(CLASSES[cls].naming, m.groups()))


def aci_name(*parts: str) -> str:
    """An ACI object name from Contiv names: joined with ``-``; when over 64
    characters, cut and suffixed with a CRC so distinct inputs stay distinct."""
    name = "-".join(p for p in parts if p)
    name = re.sub(r"[^a-zA-Z0-9_.:-]", "_", name)
    if len(name) <= 64:
        return name
    return f"{name[:55]}~{zlib.crc32(name.encode()):08x}"[:64].replace("~", "_")


def tenant_of(dn: str) -> Optional[str]:
    """``uni/tn-X/...`` -> ``X`` (None outside tenants)."""
    rns = split_dn(dn)
    if len(rns) >= 2 and rns[0] == "uni" and rns[1].startswith("tn-"):
        return rns[1][3:]
    return None
