"""Each user's sessions at several time scales: the windows of each length in `session_minutes` in which a user's
ratings fall (bayes_mf.py gives each one a bias of its own). A session is named by a key, its scale, its user and
its window packed into one int64, so that the training sessions are one sorted tensor, each scale's a block of it,
and any rating's session at each scale is found by a binary search.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ...data import SECONDS_PER_DAY

MINUTES_PER_DAY = 1440
# A key is (scale x USER_SPAN + user) x WINDOW_SPAN + window: windows of a minute or more number fewer than 2^32 until
# the year 8,000, users fewer than 2^28, and at most MAX_SCALES scales keep the key below 2^63.
WINDOW_SPAN = 2**32
USER_SPAN = 2**28
MAX_SCALES = 7
MIN_SCALE_MINUTES = 1  # a window is a whole number of minutes of the ratings' clock (whole seconds)


class Sessions(NamedTuple):
    """The training ratings' sessions: their sorted keys, each scale's block of them (`starts`, scales + 1), and
    each training rating's session at each scale (scales x ratings, indices into the keys)."""

    keys: Tensor  # int64, sorted, unique
    starts: Tensor  # int64
    of_rating: Tensor  # int64


def session_keys(users: Tensor, days: Tensor, minutes: list[int]) -> Tensor:
    """The key of each rating's session at each scale (scales x ratings): its user, and the window of each length
    in `minutes` that its day (float64 days since 1970, as `data.rating_tensors` gives them) falls in."""
    # A rating's time is a whole second (its timestamp), which float64 days hold to a microsecond: rounded back to
    # seconds, windows are cut by integer division, exactly where the clock cuts them (float32 days step by minutes).
    seconds = torch.round(days.double() * SECONDS_PER_DAY).long()
    keys = []
    for scale, length in enumerate(minutes):
        windows = torch.div(seconds, 60 * length, rounding_mode="floor")
        keys.append((scale * USER_SPAN + users.long()) * WINDOW_SPAN + windows)
    return torch.stack(keys) if keys else torch.zeros(0, len(users), dtype=torch.int64, device=users.device)


def make_sessions(users: Tensor, days: Tensor, minutes: list[int]) -> Sessions:
    """The sessions of the training ratings (`users`, `days`) at each scale of `minutes`."""
    keys, of_rating = torch.unique(session_keys(users, days, minutes), sorted=True, return_inverse=True)
    scale_firsts = torch.arange(len(minutes) + 1, device=keys.device) * USER_SPAN * WINDOW_SPAN
    return Sessions(keys, torch.searchsorted(keys, scale_firsts), of_rating)


def find_sessions(keys: Tensor, users: Tensor, days: Tensor, minutes: list[int]) -> tuple[Tensor, Tensor]:
    """For each rating (`users`, `days`) at each scale: the index of its session among the sorted training `keys`,
    and whether training had that session (where it did not, the index is any valid one); scales x ratings each."""
    wanted = session_keys(users, days, minutes)
    if not len(keys):
        return torch.zeros_like(wanted), torch.zeros_like(wanted, dtype=torch.bool)
    index = torch.searchsorted(keys, wanted).clamp(max=len(keys) - 1)
    return index, keys[index] == wanted
