"""Bad input built from real rows: each bad row counted, reported with file:line, skipped;
the rest of the file still goes out. Chunk positions and resuming from them."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tstat_transport.reader import CHUNK_SIZE, LogFile, Position
from tstat_transport.records import LogFormatError, Options

OPTS = Options(threshold_bits=0, sensor="s1", instance=0)
TCP = "2026_11_24_19_20.out/log_tcp_complete"  # 226 rows of full/
UDP = "2026_11_24_19_24.out/log_udp_complete"  # 183 rows of full/


def lines_of(data_dir: Path, rel: str) -> list[str]:
    return (data_dir / "full" / rel).read_text().splitlines(keepends=True)


def read_all(path: Path, protocol="tcp", complete=True, start=None) -> tuple[list[dict], LogFile]:
    lf = LogFile(path, protocol, OPTS, start or Position(), complete)
    return [o for chunk in lf.chunks() for o in chunk.objects], lf


def write(tmp_path: Path, lines: list[str], name="log_tcp_complete") -> Path:
    path = tmp_path / name
    path.write_text("".join(lines))
    return path


@pytest.fixture
def tcp_lines(data_dir):
    return lines_of(data_dir, TCP)


@pytest.fixture
def reference(data_dir):
    objs, lf = read_all(data_dir / "full" / TCP)
    assert lf.stats.rows == 226 and len(objs) == 452
    return objs


def without_row(objs: list[dict], row: int) -> list[dict]:
    """`objs` (2 per row at threshold 0) less the objects of data row `row` (1-based)."""
    return objs[: 2 * (row - 1)] + objs[2 * row :]


def test_wrong_field_count_is_reported_and_skipped(tmp_path, tcp_lines, reference, caplog):
    lines = list(tcp_lines)
    lines[10] = " ".join(lines[10].split(" ")[:-3]) + "\n"  # line 11 = data row 10
    path = write(tmp_path, lines)
    objs, lf = read_all(path)
    assert objs == without_row(reference, 10)
    assert lf.stats.bad_rows == 1 and lf.stats.rows == 226
    assert f"{path}:11: bad row skipped: expected 134 fields, found 131" in caplog.text


@pytest.mark.parametrize("count", [1, 109, 110, 111, 133, 135, 212])
@pytest.mark.parametrize("end", ["\n", "\r\n"])
def test_any_wrong_field_count_is_reported_with_it(
    tmp_path, tcp_lines, reference, caplog, count, end
):
    """The reader splits a row only up to the last column it reads (109 of 134 here):
    a count wrong before or after that point is caught all the same."""
    lines = list(tcp_lines)
    fields = lines[10].rstrip("\n").split(" ")
    lines[10] = " ".join((fields + ["7"] * count)[:count]) + end
    lines[11] = lines[11].replace("\n", end)  # a good CRLF row still goes out
    path = write(tmp_path, lines)
    objs, lf = read_all(path)
    assert objs == without_row(reference, 10)
    assert lf.stats.bad_rows == 1 and lf.stats.rows == 226
    assert f"{path}:11: bad row skipped: expected 134 fields, found {count}" in caplog.text


def test_non_numeric_value_is_reported_with_its_column(tmp_path, tcp_lines, reference, caplog):
    lines = list(tcp_lines)
    fields = lines[20].split(" ")
    fields[30] = "12.5ms"  # durat:31
    lines[20] = " ".join(fields)
    fields = lines[21].split(" ")
    fields[6] = "-"  # c_bytes_uniq:7
    lines[21] = " ".join(fields)
    path = write(tmp_path, lines)
    objs, lf = read_all(path)
    assert objs == without_row(without_row(reference, 21), 20)
    assert lf.stats.bad_rows == 2
    assert f"{path}:21: bad row skipped: column durat = '12.5ms' is not a number" in caplog.text
    assert f"{path}:22: bad row skipped: column c_bytes_uniq = '-' is not an integer" in caplog.text


def test_second_header_mid_file_is_adopted_not_a_bad_row(tmp_path, tcp_lines, reference, caplog):
    caplog.set_level(logging.INFO)
    lines = tcp_lines[:100] + [tcp_lines[0]] + tcp_lines[100:]
    path = write(tmp_path, lines)
    objs, lf = read_all(path)
    assert objs == reference
    assert lf.stats.bad_rows == 0 and lf.stats.headers == 1
    assert f"{path}:101: header repeated" in caplog.text


def test_restart_with_another_level_switches_columns(tmp_path, data_dir, tcp_lines, reference):
    # Tstat restarted with the core level (44 columns) into the same file.
    core = (data_dir / "core/2026_11_24_19_23.out/log_tcp_complete").read_text().splitlines(True)
    path = write(tmp_path, tcp_lines + core[:11])
    objs, lf = read_all(path)
    core_objs, _ = read_all(data_dir / "core/2026_11_24_19_23.out/log_tcp_complete")
    assert objs == reference + core_objs[:20]
    assert lf.stats.bad_rows == 0 and lf.stats.rows == 236


def test_cut_last_line_in_complete_directory_is_a_bad_row(tmp_path, tcp_lines, reference, caplog):
    path = write(tmp_path, tcp_lines[:-1] + [tcp_lines[-1][:200]])
    objs, lf = read_all(path, complete=True)
    assert objs == reference[:-2]
    assert lf.stats.bad_rows == 1 and not lf.stats.incomplete_tail
    assert f"{path}:227: bad row skipped: last line is cut short" in caplog.text


def test_cut_last_line_in_file_being_written_is_left_for_later(
    tmp_path, tcp_lines, reference, caplog
):
    path = write(tmp_path, tcp_lines[:-1] + [tcp_lines[-1][:200]])
    objs, lf = read_all(path, complete=False)
    assert objs == reference[:-2]
    assert lf.stats.bad_rows == 0 and lf.stats.incomplete_tail
    assert "bad row" not in caplog.text
    # Once Tstat finished the line, a resumed read sends exactly the rest.
    path.write_text("".join(tcp_lines))
    rest, _ = read_all(path, start=lf.end)
    assert rest == reference[-2:]


def test_empty_and_header_only_files(tmp_path, tcp_lines, caplog):
    empty = write(tmp_path, [], "empty")
    assert read_all(empty) == ([], read_all(empty)[1])
    objs, lf = read_all(write(tmp_path, tcp_lines[:1], "header_only"))
    assert objs == [] and lf.stats.rows == 0 and lf.stats.bad_rows == 0
    assert "bad row" not in caplog.text


def test_not_a_tstat_log_names_file_and_line(tmp_path, tcp_lines):
    path = write(tmp_path, tcp_lines[1:])
    with pytest.raises(LogFormatError, match=rf"^{path}:1: first line is not a Tstat header"):
        read_all(path)


def test_nan_value_is_sent_as_null(tmp_path, tcp_lines, reference, caplog):
    # Not seen from Tstat, but %f prints nan for a NaN: JSON has no NaN, the flow still goes.
    lines = list(tcp_lines)
    fields = lines[5].split(" ")
    fields[47] = "nan"  # c_rtt_std:48
    lines[5] = " ".join(fields)
    path = write(tmp_path, lines)
    objs, lf = read_all(path)
    assert lf.stats.bad_rows == 0
    assert objs[8]["values"]["tcp_rtt_std"] is None
    objs[8]["values"]["tcp_rtt_std"] = reference[8]["values"]["tcp_rtt_std"]
    assert objs == reference
    assert f"{path}:6: 1 NaN/Infinity value(s) sent as null" in caplog.text


def test_many_bad_rows_are_all_counted_but_reported_once_each_up_to_a_limit(
    tmp_path, tcp_lines, caplog
):
    lines = tcp_lines[:1] + ["garbage\n"] * 50 + tcp_lines[1:]
    objs, lf = read_all(write(tmp_path, lines))
    assert len(objs) == 452 and lf.stats.bad_rows == 50
    assert caplog.text.count("bad row skipped") == 10
    assert "more bad rows; the rest are only counted" in caplog.text


def test_chunks_are_100_objects_and_resume_from_any_boundary(data_dir, reference):
    path = data_dir / "full" / TCP
    chunks = list(LogFile(path, "tcp", OPTS).chunks())
    assert [len(c.objects) for c in chunks] == [100, 100, 100, 100, 52]
    assert [o for c in chunks for o in c.objects] == reference
    for i, chunk in enumerate(chunks):
        rest, _ = read_all(path, start=chunk.end)
        assert rest == reference[CHUNK_SIZE * (i + 1) :]


def test_resume_between_the_two_directions_of_a_row(data_dir):
    # With a threshold only some rows give two objects, so chunk ends fall mid-row.
    opts = Options(threshold_bits=100 * 8, sensor="s1", instance=0)
    path = data_dir / "full" / UDP
    everything = [o for c in LogFile(path, "udp", opts).chunks() for o in c.objects]
    chunks = list(LogFile(path, "udp", opts).chunks())
    assert any(c.end.skip == 1 for c in chunks), "expected a chunk ending mid-row"
    for i, chunk in enumerate(chunks):
        rest = [o for c in LogFile(path, "udp", opts, chunk.end).chunks() for o in c.objects]
        assert rest == everything[CHUNK_SIZE * (i + 1) :]
    assert json.dumps(everything)  # all JSON-encodable
