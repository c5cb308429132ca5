"""Reshard: write a subset's samples from the pool shards as new webdataset shards (spec §2.5, §3.5).

Index (per-shard parquet) -> pure plan (output shard contents fixed up front) -> one idempotent task
per output shard through :mod:`datacomp.engine` (resumable). ``no_copy`` writes a training-time uid
filter instead (:func:`load_uid_filter`).
"""

from datacomp.reshard.core import reshard
from datacomp.reshard.plan import plan_outputs, select
from datacomp.reshard.uidfilter import UidFilter, load_uid_filter

__all__ = ["UidFilter", "load_uid_filter", "plan_outputs", "reshard", "select"]
