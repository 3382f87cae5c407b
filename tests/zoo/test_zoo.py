"""The model zoo: table, checksum verification, downloads (file:// URLs), zoo: names in option files."""
from __future__ import annotations

import re
import shutil

import pytest

from converse_plugin import zoo
from converse_plugin.cli import zoo as zoo_cli
from converse_plugin.engine.options import OptionError, parse_options
from tests.conftest import require_shared

OPTION = """\
name: zoo_test
model_type: SRModel
num_gpu: 0
datasets:
  test_1:
    name: x
    type: GaussianNoiseDataset
    dataroot_gt: data
network_g:
  type: ConverseDnCNN
path:
  pretrain_network_g: zoo:converse_dncnn
  param_key_g: ~
{extra}val:
  metrics: ~
"""


def test_table_matches_the_shared_readme():
    readme = require_shared('zoo', 'README.md').read_text()
    table = {m.group(1): (m.group(2), m.group(3)) for m in
             re.finditer(r'\| (\S+\.pth) \|[^|]*\| (https://\S+) \| ([0-9a-f]{64}) \|', readme)}
    assert set(table) == {e.file for e in zoo.ZOO.values()}
    for entry in zoo.ZOO.values():
        assert table[entry.file] == (entry.url, entry.sha256)
    assert zoo.ZOO['converse_dncnn'].published['Set12 PSNR'] == 30.70
    assert zoo.ZOO['kair_dncnn_sigma25'].published['Set12 PSNR'] == 30.43


def test_verify_success_and_checksum_failure(tmp_path):
    shared = require_shared('zoo')
    entry = zoo.get_entry('zoo:converse_dncnn')
    assert zoo.verify_file(shared / entry.file, entry) == shared / entry.file
    bad = tmp_path / entry.file
    bad.write_bytes(b'not a checkpoint')
    with pytest.raises(zoo.ZooError) as err:
        zoo.verify_file(bad, entry)
    assert str(bad) in str(err.value) and f'expected {entry.sha256}' in str(err.value)
    with pytest.raises(zoo.ZooError, match=rf'file not found: .*missing.*expected sha256 {entry.sha256}'):
        zoo.verify_file(tmp_path / 'missing' / entry.file, entry)
    with pytest.raises(zoo.ZooError, match="unknown zoo model 'nope'; known: converse_dncnn"):
        zoo.get_entry('nope')


def test_download_verifies_and_keeps_nothing_on_mismatch(tmp_path):
    shared = require_shared('zoo')
    good = zoo.download('conversenet', tmp_path / 'a', url=(shared / 'conversenet.pth').as_uri())
    assert good == tmp_path / 'a' / 'conversenet.pth' and zoo.sha256_file(good) == zoo.ZOO['conversenet'].sha256
    wrong = tmp_path / 'wrong.pth'
    wrong.write_bytes(b'\0' * 100)
    with pytest.raises(zoo.ZooError, match=r'downloaded from file://.*wrong\.pth has sha256 .*not saved to'):
        zoo.download('converse_usrnet', tmp_path / 'b', url=wrong.as_uri())
    assert list((tmp_path / 'b').iterdir()) == []


def test_download_uses_the_entry_address(tmp_path):
    opened = []

    def fake_urlopen(url):
        import io
        opened.append(url)
        return io.BytesIO(b'x')
    with pytest.raises(zoo.ZooError, match='has sha256'):
        zoo.download('kair_dncnn_sigma25', tmp_path, urlopen=fake_urlopen)
    assert opened == ['https://github.com/cszn/KAIR/raw/master/model_zoo/dncnn_25.pth']


def test_cli_list_and_verify(tmp_path, capsys):
    assert zoo_cli.main(['list']) == 0
    assert 'converse_usrnet | ConverseUSRNet' in capsys.readouterr().out
    shared = require_shared('zoo')
    assert zoo_cli.main(['verify', str(shared)]) == 0
    assert capsys.readouterr().out.count(' ok ') == 5
    shutil.copy(shared / 'converse_dncnn.pth', tmp_path / 'converse_dncnn.pth')
    (tmp_path / 'conversenet.pth').write_bytes(b'broken')
    assert zoo_cli.main(['verify', str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert re.search(r'converse_dncnn\s+ok', out) and re.search(r'conversenet\s+sha256 mismatch', out)
    assert re.search(r'converse_usrnet\s+missing', out)


def test_option_file_names_a_zoo_checkpoint(tmp_path, monkeypatch):
    shared = require_shared('zoo')
    monkeypatch.delenv(zoo.ENV_ZOO_DIR, raising=False)
    path = tmp_path / 'opt.yml'
    path.write_text(OPTION.format(extra=f'  zoo_dir: {shared}\n'))
    opt, _ = parse_options(str(tmp_path), is_train=False, argv=['-opt', str(path)])
    assert opt['path']['pretrain_network_g'] == str(shared / 'converse_dncnn.pth')
    # from the environment variable
    path.write_text(OPTION.format(extra=''))
    monkeypatch.setenv(zoo.ENV_ZOO_DIR, str(shared))
    opt, _ = parse_options(str(tmp_path), is_train=False, argv=['-opt', str(path)])
    assert opt['path']['pretrain_network_g'] == str(shared / 'converse_dncnn.pth')
    # a missing or damaged file is an OptionError naming the option file, the key, the file and the sha256
    monkeypatch.setenv(zoo.ENV_ZOO_DIR, str(tmp_path))
    with pytest.raises(OptionError) as err:
        parse_options(str(tmp_path), is_train=False, argv=['-opt', str(path)])
    msg = str(err.value)
    assert str(path) in msg and 'path:pretrain_network_g' in msg and str(tmp_path / 'converse_dncnn.pth') in msg
    assert zoo.ZOO['converse_dncnn'].sha256 in msg
    (tmp_path / 'converse_dncnn.pth').write_bytes(b'damaged')
    with pytest.raises(OptionError, match=r'has sha256 [0-9a-f]{64}, expected 3b86c7f6'):
        parse_options(str(tmp_path), is_train=False, argv=['-opt', str(path)])
