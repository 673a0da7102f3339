"""Print the Debian mirror this machine's apt uses, for debootstrap (tests/docker/lib.sh).

    /usr/bin/python3 tests/docker/debian_mirror.py [SUITE]      (default bookworm)

Reads /etc/apt/sources.list and /etc/apt/sources.list.d/*.list (one-line format)
and *.sources (deb822) at run time, so no mirror is written into the repository.
Prints two lines: the URI of the first "deb" entry serving SUITE, then the URI
serving SUITE-security (or an empty line).  Exits 1 when no entry serves SUITE.
"""
import glob
import sys


def entries():
    files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list"))
    for path in files:
        try:
            lines = open(path).read().splitlines()
        except OSError:
            continue
        for line in lines:
            line = line.split("#", 1)[0].split()
            if len(line) < 3 or line[0] != "deb":
                continue
            words = [w for w in line[1:] if not (w.startswith("[") or w.endswith("]") or "=" in w)]
            if len(words) >= 2:
                yield words[0], [words[1]]
    for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
        try:
            text = open(path).read()
        except OSError:
            continue
        for stanza in text.split("\n\n"):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                k, _, v = line.partition(":")
                fields[k.strip().lower()] = v.split()
            if "deb" not in fields.get("types", []) or fields.get("enabled", ["yes"])[0] == "no":
                continue
            for uri in fields.get("uris", []):
                yield uri, fields.get("suites", [])


def main():
    suite = sys.argv[1] if len(sys.argv) > 1 else "bookworm"
    main_uri = security_uri = ""
    for uri, suites in entries():
        if not uri.startswith(("http://", "https://")):
            continue
        if suite in suites and not main_uri:
            main_uri = uri
        if suite + "-security" in suites and not security_uri:
            security_uri = uri
    if not main_uri:
        print("no apt source serves Debian %s" % suite, file=sys.stderr)
        sys.exit(1)
    print(main_uri)
    print(security_uri)


if __name__ == "__main__":
    main()
