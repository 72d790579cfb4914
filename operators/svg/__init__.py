"""Operators of the svg DAG: safe parse, sanitise, normalise (prepare), resvg render and its checks (render)."""
