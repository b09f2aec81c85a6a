"""Retention: deleting runs that ended long enough ago, with their journals.

The unit is a tree (a top-level run and every run it spawned, at any depth): it goes only once
every run in it has ended before the cutoff, so a parent never loses a child whose outcome it
may still read, and a run's journal never loses entries a replay would need. Ended runs hold
no tenant counters, so nothing else changes. Each call deletes at most ``limit`` trees, in one
transaction, so a large purge proceeds in short steps (the CLI loops).
"""

from __future__ import annotations

import json

from corral.models import TERMINAL
from corral.store.sql_base import SqlBase
from corral.store.transaction import Transaction


class RetentionMixin(SqlBase):
    async def purge_finished(self, before: float, *, limit: int = 1000) -> int:
        """Delete up to ``limit`` trees of runs that all ended before ``before`` (epoch
        seconds); returns how many runs went."""
        if limit < 1:
            return 0

        async def find(tx: Transaction) -> list[list[str]]:
            # page past roots whose trees have not all ended (a child still running or
            # sleeping): a batch of only those would otherwise stop every purge behind it
            trees: list[list[str]] = []
            after = ""
            while len(trees) < limit:
                page = limit - len(trees)
                roots = await tx.fetchall(
                    self.q["finished_roots"], {"before": before, "after": after, "limit": page}
                )
                for root, children, _ in roots:
                    tree = (
                        [str(root)]
                        if int(children) == 0
                        else await self._ended_tree(tx, str(root), before)
                    )
                    if tree is not None:
                        trees.append(tree)
                if len(roots) < page:
                    break
                after = str(roots[-1][2])  # the dialect's scan order: id, or SQLite's rowid
            return trees

        async def delete(tx: Transaction) -> int:
            # A root (only a root) can be retried after it was found: such a tree stays whole
            roots = json.dumps([tree[0] for tree in found])
            kept = {
                str(r[0])
                for r in await tx.fetchall(
                    self.q["still_ended_roots"], {"roots": roots, "before": before}
                )
            }
            doomed = [run_id for tree in found if tree[0] in kept for run_id in tree]
            if not doomed:
                return 0
            ids = json.dumps(doomed)
            await tx.execute(self.q["delete_journal_of"], {"ids": ids})
            await tx.execute(self.q["delete_waits_of"], {"ids": ids})
            rows = await tx.fetchall(self.q["delete_runs"], {"ids": ids})
            return len(rows)

        # Finding the trees reads (finished_roots scans the runs table: no index on
        # finished_at, which every ack would pay for), so it runs without the write lock: on
        # SQLite that lock stops every process's writes, and a scan of 250,000 runs holds it
        # ~75 ms. What it finds stays true but for a retry: an ended child never changes
        # again, an ended root spawns no more children unless an operator retries it, which
        # the delete checks under the roots' locks. A purge running meanwhile may delete
        # some first.
        found = await self._read(find)
        if not found:
            return 0
        return await self._tx(delete)

    async def _ended_tree(self, tx: Transaction, root: str, before: float) -> list[str] | None:
        """``root`` and all its descendants, or None if any has not ended before ``before``."""
        tree = [root]
        level = [root]
        while level:
            rows = await tx.fetchall(self.q["children_of"], {"ids": json.dumps(level)})
            for _, status, finished_at, _ in rows:
                if status not in TERMINAL or finished_at is None or finished_at >= before:
                    return None
            level = [str(r[0]) for r in rows if int(r[3]) > 0]
            tree += [str(r[0]) for r in rows]
        return tree
