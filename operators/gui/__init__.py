"""Operators of the gui DAG: Chromium through Playwright behind an address guard (browser, netguard, guard_proxy, pinned_fetch), visible DOM elements (dom), GUI tasks (tasks)."""
