"""A minimal pool owner for CLI tests, run as its own process: ``python -m tests.limits.pool_process NAME MODEL``.

It publishes a record (256 MiB mapped of 1 GiB, half of it used, with a page map), then follows its
control block the way an engine does: it maps no more than the limit and acknowledges each revision.
Prints ``ready`` once published; exits on SIGTERM (removing its record) or dies on SIGKILL (leaving it
for readers to reap).
"""

import signal
import sys
import time

import numpy as np

from kvlab.registry import PageState, Publisher

MiB, GiB, PAGE = 1 << 20, 1 << 30, 2 << 20


def main(name: str, model: str) -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    pub = Publisher(model, GiB, PAGE, name=name)
    want, seen = 256 * MiB, -1
    while True:
        ctl = pub.control()
        if ctl.revision != seen:
            seen = ctl.revision
            mapped = want if ctl.limit is None else min(want, ctl.limit // PAGE * PAGE)
            pages = np.zeros(GiB // PAGE, np.uint8)
            pages[:mapped // PAGE] = PageState.MAPPED
            pages[:mapped // PAGE // 2] = PageState.USED
            pub.update(mapped=mapped, used=mapped // 2, limit=ctl.limit, min=ctl.min, n_maps=mapped // PAGE,
                       control_ack=ctl.revision, pages=pages)
            if seen == 0:
                print("ready", flush=True)
        time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
