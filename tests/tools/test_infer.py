"""``basicsr infer`` and the tiling behind it: a folder with gray, colour, 16-bit and corrupt images;
outputs equal to the network's own output; tiles that bound the input size and blend exactly."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

import converse_plugin  # noqa: F401
from converse_plugin.archs import ConverseDnCNN, ConverseUSRNet, DnCNN
from converse_plugin.cli import infer
from converse_plugin.io.checkpoint import save_state_dict_file
from converse_plugin.models.tiling import tile_starts, tiled_forward

GRAY_KWARGS = '{"num_feat": 4, "num_block": 1, "kernel_size": 3, "padding": 2}'


@pytest.fixture(scope='module')
def gray_model(tmp_path_factory):
    torch.manual_seed(0)
    net = ConverseDnCNN(num_feat=4, num_block=1, kernel_size=3, padding=2).eval()
    path = tmp_path_factory.mktemp('ckpt') / 'gray.pth'
    save_state_dict_file(net.state_dict(), path)
    return net, str(path)


@pytest.fixture
def image_folder(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / 'in'
    folder.mkdir()
    gray = rng.integers(0, 256, (24, 30), dtype=np.uint8)
    rgb = rng.integers(0, 256, (20, 26, 3), dtype=np.uint8)
    deep = rng.integers(0, 65536, (22, 18), dtype=np.uint16)
    cv2.imwrite(str(folder / 'a_gray.png'), gray)
    cv2.imwrite(str(folder / 'b_rgb.bmp'), rgb)
    cv2.imwrite(str(folder / 'c_deep.png'), deep)
    (folder / 'd_corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n not really a png')
    return folder, gray, rgb, deep


def _run(net_path, src, out, *extra):
    return infer.main(['--model', net_path, '--arch', 'ConverseDnCNN', '--arch-kwargs', GRAY_KWARGS,
                       '-i', str(src), '-o', str(out), '--device', 'cpu', *extra])


def _expected(net, gray01: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return net(torch.from_numpy(gray01.astype(np.float32))[None, None])[0, 0].clamp(0, 1).numpy()


def test_folder_gray_rgb_16bit_and_corrupt(gray_model, image_folder, tmp_path, capsys):
    net, path = gray_model
    folder, gray, rgb, deep = image_folder
    out = tmp_path / 'out'
    assert _run(path, folder, out) == 0
    err = capsys.readouterr().err
    assert 'd_corrupt.png' in err and 'cannot decode' in err and 'restored 3 of 4' in err
    assert sorted(p.name for p in out.iterdir()) == ['a_gray.png', 'b_rgb.bmp', 'c_deep.png']

    got = cv2.imread(str(out / 'a_gray.png'), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint8 and got.shape == gray.shape
    np.testing.assert_allclose(got, np.round(_expected(net, gray / 255.0) * 255), atol=1)

    got = cv2.imread(str(out / 'b_rgb.bmp'), cv2.IMREAD_UNCHANGED)  # gray model: channel by channel
    assert got.dtype == np.uint8 and got.shape == rgb.shape
    for c in range(3):
        np.testing.assert_allclose(got[..., c], np.round(_expected(net, rgb[..., c] / 255.0) * 255), atol=1)

    got = cv2.imread(str(out / 'c_deep.png'), cv2.IMREAD_UNCHANGED)  # 16 bit in, 16 bit out
    assert got.dtype == np.uint16 and got.shape == deep.shape
    np.testing.assert_allclose(got, np.round(_expected(net, deep / 65535.0) * 65535), atol=2)
    assert np.any(got % 257 != 0)  # real 16-bit values, not an 8-bit image scaled up


def test_tiled_inference_matches_whole_image(image_folder, tmp_path):
    # a local network (DnCNN, 3 convolutions: receptive radius 3): tiles that overlap by 12 pixels give the
    # whole-image result up to the blending of the few pixels next to the tile borders
    torch.manual_seed(0)
    net = DnCNN(num_feat=8, num_conv=3)
    path = tmp_path / 'dncnn.safetensors'
    save_state_dict_file(net.state_dict(), path)
    folder = image_folder[0]
    run = ['--model', str(path), '--arch', 'DnCNN', '--arch-kwargs', '{"num_feat": 8, "num_conv": 3}',
           '-i', str(folder / 'a_gray.png'), '--device', 'cpu']
    assert infer.main(run + ['-o', str(tmp_path / 'whole'), '--tile', '0']) == 0
    assert infer.main(run + ['-o', str(tmp_path / 'tiled'), '--tile', '18', '--tile-overlap', '12']) == 0
    whole = cv2.imread(str(tmp_path / 'whole' / 'a_gray.png'), 0).astype(float)
    tiled = cv2.imread(str(tmp_path / 'tiled' / 'a_gray.png'), 0).astype(float)
    assert whole.shape == tiled.shape == (24, 30)
    diff = np.abs(whole - tiled)
    assert diff.mean() < 1.0 and np.mean(diff <= 1) > 0.9


def test_nothing_restored_exits_1(gray_model, tmp_path, capsys):
    folder = tmp_path / 'bad'
    folder.mkdir()
    (folder / 'x.jpg').write_bytes(b'nope')
    assert _run(gray_model[1], folder, tmp_path / 'o') == 1
    assert 'restored 0 of 1' in capsys.readouterr().err


def test_user_errors_name_the_problem(gray_model, tmp_path, capsys):
    img = tmp_path / 'g.png'
    cv2.imwrite(str(img), np.zeros((20, 20), np.uint8))
    assert infer.main(['--model', gray_model[1], '-i', str(img), '-o', str(tmp_path / 'o')]) == 2
    assert '--arch' in capsys.readouterr().err
    assert _run(gray_model[1], img, tmp_path / 'o', '--scale', '2') == 2
    assert 'upscales by 1' in capsys.readouterr().err
    assert infer.main(['--model', 'no_such_model', '-i', str(img), '-o', str(tmp_path / 'o')]) == 2
    assert 'neither a zoo model name nor a checkpoint file' in capsys.readouterr().err

    usr = ConverseUSRNet(num_feat=4, num_block=1, num_iter=1)
    usr_path = tmp_path / 'usr.pth'
    torch.save(usr.state_dict(), usr_path)
    base = ['--model', str(usr_path), '--arch', 'ConverseUSRNet', '--arch-kwargs',
            '{"num_feat": 4, "num_block": 1, "num_iter": 1}', '-i', str(img), '-o', str(tmp_path / 'u')]
    assert infer.main(base) == 2
    assert '--kernel' in capsys.readouterr().err
    np.save(tmp_path / 'k5.npy', np.ones((5, 5)))
    assert infer.main(base + ['--kernel', str(tmp_path / 'k5.npy')]) == 2
    assert 'the model expects 7x7' in capsys.readouterr().err
    k = np.outer(np.hanning(9)[1:-1], np.hanning(9)[1:-1])
    np.save(tmp_path / 'k7.npy', k)
    assert infer.main(base + ['--kernel', str(tmp_path / 'k7.npy')]) == 0  # a colour model on a gray image
    out = cv2.imread(str(tmp_path / 'u' / 'g.png'), cv2.IMREAD_UNCHANGED)
    assert out.shape == (20, 20)


def test_zoo_model_by_name(tmp_path, monkeypatch, shared):
    zoo = shared('zoo')
    monkeypatch.setenv('CONVERSE_ZOO_DIR', str(zoo))
    img = cv2.imread(str(shared('data', 'Set12', '01.png')), 0)[:40, :40]
    noisy = np.clip(img / 255.0 + np.random.default_rng(0).normal(0, 25 / 255, img.shape), 0, 1)
    cv2.imwrite(str(tmp_path / 'n.png'), np.round(noisy * 255).astype(np.uint8))
    assert infer.main(['--model', 'dncnn', '-i', str(tmp_path / 'n.png'), '-o', str(tmp_path / 'o')]) == 0
    out = cv2.imread(str(tmp_path / 'o' / 'n.png'), 0).astype(float)
    mse = lambda a: np.mean((a - img.astype(float)) ** 2)  # noqa: E731
    assert mse(out) < mse(np.round(noisy * 255)) / 3  # denoised: > 4.7 dB better


@pytest.mark.parametrize('size,tile,overlap', [((37, 50), 16, 4), ((16, 16), 16, 4), ((40, 21), 10, 9)])
def test_tile_starts_cover_the_image(size, tile, overlap):
    for n in size:
        starts = tile_starts(n, tile, overlap)
        assert starts[0] == 0 and starts[-1] + min(tile, n) == n
        assert all(b - a <= tile - overlap for a, b in zip(starts, starts[1:]))


def test_tiled_forward_exact_for_pointwise_and_bounded_tiles():
    x = torch.rand(2, 3, 45, 61)
    seen = []

    def fn(t):
        seen.append(tuple(t.shape[-2:]))
        return torch.nn.functional.interpolate(t * 2 + 1, scale_factor=3, mode='nearest')

    out = tiled_forward(fn, x, tile=16, overlap=6, scale=3)
    torch.testing.assert_close(out, fn(x), rtol=1e-6, atol=1e-6)
    assert max(max(s) for s in seen[:-1]) == 16 and len(seen) > 10  # tiles only (the last call is the check)
    with pytest.raises(ValueError, match='expected'):
        tiled_forward(lambda t: t[..., :-1, :], x, tile=16, overlap=4)
    with pytest.raises(ValueError, match='overlap'):
        tiled_forward(fn, x, tile=16, overlap=16, scale=3)
