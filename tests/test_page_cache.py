"""The kept project pages (gcs_sync/web/page_cache.py): served again only for the very
object they were rendered from, and bounded in size."""

from __future__ import annotations

from gcs_sync.web.page_cache import PageCache


class Renders:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, body: str):
        def render() -> str:
            self.count += 1
            return body
        return render


def test_a_page_is_rendered_again_for_another_version_of_its_project() -> None:
    cache, renders = PageCache(1000), Renders()
    first, second = tuple(["a"]), tuple(["a", "b"])
    assert cache.page(("p", "html"), first, renders("one")) == "one"
    assert cache.page(("p", "html"), first, renders("ignored")) == "one" and renders.count == 1
    assert cache.page(("p", "json"), first, renders("as json")) == "as json"  # another key
    assert cache.page(("p", "html"), second, renders("two")) == "two" and renders.count == 3
    equal_but_another = tuple(["a", "b"])
    assert cache.page(("p", "html"), equal_but_another, renders("three")) == "three"  # identity, not equality


def test_the_least_recently_served_pages_go_first_and_a_huge_page_is_not_kept() -> None:
    cache, renders = PageCache(100), Renders()
    sources = {name: object() for name in "abcdef"}
    for name in "ab":
        cache.page((name,), sources[name], renders(name * 20))
    cache.page(("a",), sources["a"], renders("never"))  # a served again: b is now the least recent
    for name in "cdef":
        cache.page((name,), sources[name], renders(name * 20))  # f: 120 > 100, b goes
    assert len(cache) == 5 and renders.count == 6
    assert cache.page(("a",), sources["a"], renders("never")) == "a" * 20
    assert cache.page(("b",), sources["b"], renders("b" * 20)) == "b" * 20 and renders.count == 7
    huge = object()
    assert cache.page(("h",), huge, renders("h" * 30)) == "h" * 30  # over a quarter of the bound
    assert cache.page(("h",), huge, renders("h" * 30)) == "h" * 30 and renders.count == 9
