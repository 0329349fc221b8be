"""The deny entries of one case, as the runs use them: added (ec2ir.containment.nacl_blocking),
removed (ec2ir.containment.nacl_removing), checked against the live ACLs and repaired."""

from __future__ import annotations

import functools

from ec2ir.containment.check import Breach, BreachKind
from ec2ir.containment.nacl_blocking import Blocking
from ec2ir.containment.nacl_entries import APPLIED, CHANGED, PENDING, acls_by_id, describe_live, matches
from ec2ir.containment.nacl_removing import Removing
from ec2ir.containment.nacl_report import Problem


class Edge(Blocking, Removing):
    """The deny entries of one case: added, removed, checked, each change recorded first and
    journaled after."""

    def check(self) -> list[Breach]:
        """Each of the case's entries against the live ACL: missing, or changed by someone."""
        breaches: list[Breach] = []
        acl_ids = self.records.index(self.case)
        mine_by_acl = {
            acl_id: [
                r
                for r in self.records.of_acl(acl_id)
                if r.case_id == self.case and r.status in (PENDING, APPLIED)
            ]
            for acl_id in acl_ids
        }
        acls = acls_by_id(self.aws, [acl_id for acl_id, mine in mine_by_acl.items() if mine])
        for acl_id, mine in mine_by_acl.items():
            acl = acls.get(acl_id)
            for record in mine:
                live = acl.entries.get((record.egress, record.rule_number)) if acl is not None else None
                if matches(live, record.cidr):
                    continue
                if live is None:
                    gone = "" if acl is not None else " (the network ACL no longer exists)"
                    breaches.append(
                        Breach(
                            BreachKind.NACL_ENTRY_MISSING,
                            acl_id,
                            self.case,
                            f"{record.describe()} is gone{gone}",
                        )
                    )
                else:
                    breaches.append(
                        Breach(
                            BreachKind.NACL_ENTRY_CHANGED,
                            acl_id,
                            self.case,
                            f"{record.describe()} is now {describe_live(live)}: {CHANGED}",
                        )
                    )
        return breaches

    def repair(self) -> None:
        """Add again what the case's records say is missing, in each ACL where they are."""
        for acl_id in self.records.index(self.case):
            mine = [
                r
                for r in self.records.of_acl(acl_id)
                if r.case_id == self.case and r.status in (PENDING, APPLIED)
            ]
            if not mine:
                continue
            acl = acls_by_id(self.aws, [acl_id]).get(acl_id)
            if acl is None:
                self.report.problems.append(Problem(acl_id, "the network ACL no longer exists"))
                continue
            subnets = {s for r in mine for s in r.subnets}
            self._guarded(acl_id, functools.partial(self._block_acl, acl, [], subnets))
