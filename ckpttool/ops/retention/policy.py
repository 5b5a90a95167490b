"""Which rule of a retention policy governs each run directory (`prune --policy`, `policy check`).

A rule's globs are expanded component by component through the storage listings (local disks and
buckets alike): `*`, `?` and `[...]` match within one component, a name starting with `.` only
when the glob's component does, only directories match, and a symlink is never followed (it is
reported). The run directories are those `prune -r` finds under each directory a glob matched;
each is governed by the first rule (in file order) with a matched directory that is it or one of
its parents. A glob that matches no directory is an error (UsageProblem: file, line, key).

`survey` (policy check) also walks the parent of every matched directory: the run directories
found there that no rule governs are listed as `ungoverned` (a new run beside the ones a glob
names, a typo in a glob).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from typing import TYPE_CHECKING

from ckpttool.errors import BadInput, CkptError
from ckpttool.ops.retention.policy_file import Policy, Rule
from ckpttool.ops.runs.scan import Problem, find_checkpoint_dirs

if TYPE_CHECKING:  # `policy check` never imports prune's planning
    from ckpttool.ops.retention.prune import PrunePlan
from ckpttool.storage import fs

_MAGIC = re.compile(r"[*?[]")


@dataclass(frozen=True)
class Governed:
    directory: str  # a run directory, as found under `root`
    rule: Rule
    root: str  # the directory the rule's glob matched, that holds it


@dataclass(frozen=True)
class PolicyMatch:
    policy: Policy
    matched: tuple[tuple[str, ...], ...]  # per rule, the directories its globs matched
    governed: tuple[Governed, ...]  # in rule order, then as found
    ungoverned: tuple[str, ...]  # with survey: run directories beside the matched ones that no rule governs
    problems: tuple[Problem, ...]  # links not followed, object keys never followed
    # A bucket's run directories as the tree's one listing showed them (plan_prune's `entries`: no
    # second listing per run directory).
    listings: dict = field(default_factory=dict, repr=False, compare=False)


def _split(pattern: str) -> tuple[str, list[str]]:
    """(where the walk starts, the components below it)."""
    if fs.is_url(pattern):
        scheme, _, rest = pattern.partition("://")
        bucket, *parts = rest.split("/")
        return f"{scheme}://{bucket}", parts
    return os.sep, [p for p in pattern.split(os.sep) if p]


def expand(pattern: str, problems: list[Problem], listed: dict[str, int] | None = None) -> list[str]:
    """The directories `pattern` (a resolved glob) matches, sorted; links met are added to `problems`.
    `listed`: filled with the number of subdirectories of each directory the glob's last component
    was matched in."""
    start, parts = _split(pattern)
    first = next((i for i, part in enumerate(parts) if _MAGIC.search(part)), len(parts))
    literal = fs.join(start, *parts[:first]) if parts[:first] else start
    if not fs.is_dir(literal):
        return []
    current = [literal]
    for position, part in enumerate(parts[first:], first):
        found = []
        for directory in current:
            entries = fs.list_dir(directory)
            if listed is not None and position == len(parts) - 1:
                listed[directory] = sum(entry.kind == "dir" for entry in entries)
            for entry in entries:
                if not fnmatchcase(entry.name, part) or entry.name.startswith(".") and not part.startswith("."):
                    continue
                path = fs.join(directory, entry.name)
                if entry.kind == "dir":
                    found.append(path)
                elif entry.kind == "link":
                    problems.append(Problem("link", path, f"{path} matches {pattern} but is a symlink: not followed"))
        current = sorted(found)
    return current


def _shared_listings(roots: list[str], subdirectories: dict[str, int]) -> dict[str, list]:
    """parent -> its one recursive listing, for the bucket directories among `roots` that share a
    parent with most of its subdirectories matched (`runs/*`): walking each of them would list each
    again (a request or more per run directory); one listing of the parent costs about as many
    pages as its keys fill, and stands for theirs (find_checkpoint_dirs' `listed`)."""
    siblings: dict[str, int] = {}
    for root in roots:
        if fs.is_url(root) and (parent := _parent(root)) != root:
            siblings[parent] = siblings.get(parent, 0) + 1
    return {parent: fs.list_tree(parent) for parent, count in siblings.items()
            if count >= 2 and 0 < subdirectories.get(parent, 0) <= 2 * count}


def _outermost(directories) -> list[str]:
    """The directories none of the others holds (walking those finds everything below the rest)."""
    kept: list[str] = []
    for directory in sorted(set(directories)):
        if not any(_holds(outer, directory) for outer in kept):
            kept.append(directory)
    return kept


def _holds(outer: str, directory: str) -> bool:
    return directory == outer or directory.startswith(outer.rstrip("/") + "/")


def _parent(directory: str) -> str:
    """The directory holding `directory` (a bucket, `/`: itself)."""
    parent = fs.dirname(directory)
    return directory if not parent or parent.endswith("://") else parent


def _ancestors(directory: str):
    while True:
        yield directory
        parent = _parent(directory)
        if parent == directory:
            return
        directory = parent


def _one_name_each(governed: list[Governed], problems: list[Problem]) -> list[Governed]:
    """`governed` with each run directory once: one reached under a second name (a link the policy
    names itself, a bind mount, s3a:// for s3://, gcs:// for gs://) is governed by the first rule
    reaching it only. Under both names it would be planned and applied twice, by two rules, the
    stricter deleting what the first keeps (or the two racing for its lock)."""
    first: dict[tuple, Governed] = {}
    kept = []
    for g in governed:
        names = set(fs.identity(g.directory))
        if (inode := fs.directory_identity(g.directory)) is not None:
            names.add(("directory",) + inode)  # a bind mount: another real path, the same directory
        was = next((first[name] for name in names if name in first), None)
        if was is not None:
            problems.append(Problem("alias", g.directory, f"{g.directory} is {was.directory} under another name: "
                                    f"governed by rule {was.rule.index} there, not pruned again by rule "
                                    f"{g.rule.index}"))
            continue
        first.update(dict.fromkeys(names, g))
        kept.append(g)
    return kept


def match_policy(policy: Policy, survey: bool = False) -> PolicyMatch:
    """Expand every rule's globs and assign each run directory found to the first rule matching it."""
    problems: list[Problem] = []
    matched = []
    subdirectories: dict[str, int] = {}  # per directory a glob's last component was matched in
    for rule in policy.rules:
        roots = []
        for pattern, written in zip(rule.patterns, rule.paths):
            found = expand(pattern, problems, subdirectories)
            if not found:
                raise policy.problem(rule.paths_line, f"rule {rule.index}: paths: {written!r} matches no directory"
                                     + (f" ({pattern})" if pattern != written else ""))
            roots += found
        matched.append(tuple(dict.fromkeys(roots)))
    first_rule: dict[str, int] = {}
    for number, roots in enumerate(matched):
        for root in roots:
            first_rule.setdefault(root, number)

    def governing(directory: str) -> tuple[int, str] | None:
        """(rule position, matched root) of the first rule whose glob matches `directory` or a parent."""
        hits = [(first_rule[d], d) for d in _ancestors(directory) if d in first_rule]
        return min(hits) if hits else None

    listings: dict = {}

    def walk(roots, subdirectories: dict[str, int]) -> list[str]:
        found: list[str] = []
        outermost = _outermost(roots)
        shared = _shared_listings(outermost, subdirectories)
        for root in outermost:
            found += find_checkpoint_dirs(root, problems, listings, shared.get(_parent(root)))
        return list(dict.fromkeys(found))

    governed = []
    for directory in walk(first_rule, subdirectories):
        number, root = governing(directory)
        governed.append(Governed(directory, policy.rules[number], root))
    governed.sort(key=lambda g: g.rule.index)  # stable: as found within a rule
    governed = _one_name_each(governed, problems)
    ungoverned: list[str] = []
    if survey:
        near = walk([_parent(root) for root in first_rule], {})
        # A run governed under another name (s3a:// for s3://, a link) is governed all the same.
        names = {name for g in governed for name in fs.identity(g.directory)}
        ungoverned = [d for d in near if governing(d) is None and names.isdisjoint(fs.identity(d))]
    return PolicyMatch(policy, tuple(matched), tuple(governed), tuple(ungoverned), tuple(problems), listings)


@dataclass(frozen=True)
class PolicyPlan:
    """What `prune --policy` would do: each governed run directory's plan by its rule, or the error
    that stopped that run directory alone (damage, a metric that cannot be read ...)."""

    match: PolicyMatch
    planned: tuple[tuple[Governed, "PrunePlan"], ...]
    failed: tuple[tuple[Governed, Exception], ...]


def plan_policy(policy: Policy, dry_run: bool = False, whole_check_at_apply: bool = False) -> PolicyPlan:
    """Plan every run directory `policy` governs by its rule (reads only), several at a time; a
    bucket's from the tree's one listing. A plan `refusal` (deletions that depend on scores read
    around damage) fails its run directory, except in a `dry_run` (its problems then show it).
    `whole_check_at_apply`: plan_prune's, for plans about to be applied."""
    from ckpttool.ops.retention.batches import caught
    from ckpttool.ops.retention.prune import plan_prune
    from ckpttool.ops.retention.scoring import DAMAGE_HINT
    from ckpttool.ops.runs.scan import for_each_directory, moved_out_of_tree

    match = match_policy(policy)
    rule_of = {g.directory: g for g in match.governed}

    def plan(directory: str) -> "PrunePlan":
        governed = rule_of[directory]
        rule = governed.rule
        if moved := moved_out_of_tree(governed.root, directory):
            raise BadInput(moved)
        planned = plan_prune(directory, rule.retention, clean=rule.clean, ignore_bad_state=rule.ignore_bad_state,
                             metric=rule.metric_for(directory), allow_damaged=rule.allow_damaged_metrics,
                             entries=match.listings.get(directory), whole_check_at_apply=whole_check_at_apply)
        if planned.refusal and not dry_run:
            raise BadInput(planned.refusal, hint=DAMAGE_HINT)
        return planned

    # One run directory's failure (CkptError, OSError) is its result and the others go on; a bug is raised.
    planned = for_each_directory(lambda d: caught(lambda: plan(d), (CkptError, OSError)),
                                 [g.directory for g in match.governed])
    return PolicyPlan(match, tuple((g, p) for g, p in zip(match.governed, planned) if not isinstance(p, Exception)),
                      tuple((g, p) for g, p in zip(match.governed, planned) if isinstance(p, Exception)))
