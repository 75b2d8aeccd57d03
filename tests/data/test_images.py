"""The shared image reader: decompression bombs, 16-bit rescaling, huge images shrunk while decoding."""
import numpy as np
import pytest
from PIL import Image

from fastmed.data.images import SHRINK_MARGIN, load_image, read_image, resize_image, to_rgb
from fastmed.errors import DataError


def _smooth(h: int, w: int) -> np.ndarray:
    """Smooth RGB content (gradients and a disc): resize methods agree on it up to rounding."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    disc = ((y - 0.5) ** 2 + (x - 0.4) ** 2 < 0.1).astype(float)
    return (np.stack([x, y, 0.5 + 0.4 * disc], -1) * 255).clip(0, 255).astype(np.uint8)


def test_decompression_bomb_is_a_data_error(tmp_path, bomb_png):
    bomb = bomb_png(tmp_path / "bomb.png")
    assert bomb.stat().st_size < 200
    with pytest.raises(DataError, match=r"cannot read image .*bomb\.png: .*decompression bomb"):
        read_image(bomb)
    with pytest.raises(DataError, match=r"bomb\.png"):
        load_image(bomb, (32, 32))


def test_16bit_grey_is_rescaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 32768, 65535]], np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    got = read_image(tmp_path / "g16.png")
    assert got.shape == (1, 4, 3) and got[0, :, 0].tolist() == [0, 100, 128, 255]
    assert (got[..., 0] == got[..., 2]).all()
    as_int32 = Image.fromarray(values.astype(np.int32), "I")
    assert np.asarray(to_rgb(as_int32))[0, :, 1].tolist() == [0, 100, 128, 255]


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_huge_images_are_shrunk_while_decoding(tmp_path, suffix):
    """A 2000x1600 file read for a 48x48 model never reaches the caller at full size (draft / reduce)."""
    path = tmp_path / f"big{suffix}"
    Image.fromarray(_smooth(1600, 2000)).save(path, quality=95)
    shrunk = read_image(path, fit=(48, 48))
    assert shrunk.shape[0] < 1600 / 4 and min(shrunk.shape[:2]) >= SHRINK_MARGIN * 48
    at_model_size = load_image(path, (48, 48))
    assert at_model_size.shape == (48, 48, 3) and at_model_size.dtype == np.uint8
    reference = resize_image(read_image(path), (48, 48)).astype(int)  # today's full-resolution preprocessing
    diff = np.abs(at_model_size.astype(int) - reference)
    assert diff.mean() < 1.0 and diff.max() <= 8


def test_normal_sized_images_are_untouched(tmp_path):
    """Below 2 x SHRINK_MARGIN x the model size nothing is shrunk: the pixels are exactly today's."""
    image = _smooth(300, 250)
    Image.fromarray(image).save(tmp_path / "n.png")
    np.testing.assert_array_equal(read_image(tmp_path / "n.png", fit=(48, 48)), image)
    np.testing.assert_array_equal(load_image(tmp_path / "n.png", (48, 48)), resize_image(image, (48, 48)))
