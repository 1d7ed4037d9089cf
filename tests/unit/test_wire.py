"""The pieces the worker and the writer agent share: durable range sets, the compression
choice, certificate fingerprints."""

from __future__ import annotations

import random

import pytest

from coriolis.transfer.tls import normalise_fingerprint
from coriolis.transfer.wire import CompressionPolicy, RangeSet


def test_range_set_merges_and_covers() -> None:
    ranges = RangeSet()
    ranges.add(10, 20)
    ranges.add(30, 40)
    ranges.add(20, 30)  # bridges the two
    ranges.add(50, 60)
    assert ranges.as_list() == [[10, 40], [50, 60]]
    assert ranges.covers(10, 40) and ranges.covers(55, 60)
    assert not ranges.covers(35, 55) and not ranges.covers(0, 11)
    assert ranges.total() == 40


def test_range_set_matches_a_bitmap_whatever_the_order() -> None:
    rng = random.Random(1)
    for _ in range(200):
        ranges, bitmap = RangeSet(), [False] * 200
        for _ in range(rng.randint(1, 15)):
            start = rng.randrange(200)
            end = min(200, start + rng.randint(0, 30))
            ranges.add(start, end)
            bitmap[start:end] = [True] * (end - start)
        expected, pos = [], 0
        while pos < 200:
            if bitmap[pos]:
                end = pos
                while end < 200 and bitmap[end]:
                    end += 1
                expected.append([pos, end])
                pos = end
            else:
                pos += 1
        assert ranges.as_list() == expected


def test_forced_modes() -> None:
    assert CompressionPolicy("zstd").should_compress()
    assert not CompressionPolicy("none").should_compress()
    with pytest.raises(ValueError, match="compression must be one of"):
        CompressionPolicy("gzip")


def test_auto_compresses_when_it_beats_the_link() -> None:
    slow_link = CompressionPolicy("auto")
    assert slow_link.should_compress()  # nothing learnt yet: sample
    slow_link.record_compression(4 << 20, 1 << 20, 0.01)  # 400 MiB/s, ratio 0.25
    slow_link.record_send(4 << 20, 0.4)  # 10 MiB/s link
    assert all(slow_link.should_compress() for _ in range(40))

    fast_link = CompressionPolicy("auto")
    fast_link.record_compression(4 << 20, 1 << 20, 0.01)
    fast_link.record_send(4 << 20, 0.002)  # 2 GiB/s link: zstd would slow it down
    decisions = [fast_link.should_compress() for _ in range(64)]
    assert decisions.count(True) == 64 // CompressionPolicy.SAMPLE_EVERY  # samples only

    incompressible = CompressionPolicy("auto")
    incompressible.record_compression(4 << 20, 4 << 20, 0.01)
    incompressible.record_send(4 << 20, 0.4)
    assert [incompressible.should_compress() for _ in range(16)].count(True) == 1


def test_fingerprints_are_normalised_and_checked() -> None:
    digest = "AB" * 32
    assert normalise_fingerprint(digest) == ":".join(["ab"] * 32)
    assert normalise_fingerprint(":".join(["AB"] * 32)) == ":".join(["ab"] * 32)
    with pytest.raises(ValueError, match="64 hexadecimal"):
        normalise_fingerprint("abc")
