"""The debug-kernel stress set-up on the host: the debug fragment per target, the
pattern that judges a debug console, and kmemleak report splitting.
tests/board/test_stress.py runs the stress sessions."""

from __future__ import annotations

from conftest import DEBUG_TROUBLE, leak_reports
from ktap.boards import kernels as kernel
from ktap.core.targets import get_target, target_names


TARGETS = target_names()        # every targets/*/target.toml


# What the debug checkers print when they find something (any log level).


def test_debug_fragment_applies_per_target():
    frag = {t: kernel.parse_fragment(kernel.variant_fragment(get_target(t), "debug")) for t in TARGETS}
    for t in TARGETS:
        for opt in ("CONFIG_PROVE_LOCKING", "CONFIG_DEBUG_ATOMIC_SLEEP", "CONFIG_DEBUG_KMEMLEAK",
                    "CONFIG_SOFTLOCKUP_DETECTOR", "CONFIG_DETECT_HUNG_TASK"):
            assert frag[t][opt] == "y", (t, opt)
    assert {t for t in TARGETS if frag[t].get("CONFIG_KASAN") == "y"} == \
        {"x86_64", "arm", "arm64", "powerpc"}
    assert {t for t in TARGETS if frag[t].get("CONFIG_HARDLOCKUP_DETECTOR") == "y"} == {"x86_64"}
    # the variant has its own cache entry; the default kernel's key is unchanged
    t = get_target("arm")
    assert kernel.config_key(t, "v", "cc") != kernel.config_key(t, "v", "cc", "debug")
    assert kernel.config_key(t, "v", "cc", None) == kernel.config_key(t, "v", "cc")


def test_debug_trouble_pattern():
    assert DEBUG_TROUBLE.search("WARNING: possible circular locking dependency detected")
    assert DEBUG_TROUBLE.search("BUG: KASAN: slab-out-of-bounds in ktap_fire+0x1c/0x40")
    assert DEBUG_TROUBLE.search("kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)")
    assert DEBUG_TROUBLE.search("BUG: sleeping function called from invalid context at mm/slab.h:1")
    assert not DEBUG_TROUBLE.search("kmemleak: Kernel memory leak detector initialized (mem pool available: 1)")
    assert not DEBUG_TROUBLE.search("Lock dependency validator: Copyright (c) 2006 Red Hat, Inc., Ingo Molnar")
    assert not DEBUG_TROUBLE.search("KASAN init done")


def test_leak_reports_split():
    text = ('unreferenced object 0xc1 (size 8):\n  comm "swapper", pid 1, jiffies 5\n'
            'unreferenced object 0xc2 (size 64):\n  comm "ktaprun", pid 30, jiffies 900\n')
    ours, boot = leak_reports(text)
    assert len(ours) == 1 and "ktaprun" in ours[0] and len(boot) == 1
