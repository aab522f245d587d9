from pcb_pipeline.core.progress import Progress, clock, progress_line


def test_clock_formats_minutes_and_seconds():
    assert clock(0) == "0:00"
    assert clock(61.4) == "1:01"
    assert clock(-3) == "0:00"


def test_progress_line_estimates_remaining_time_from_the_rate_so_far():
    line = progress_line("landing pairs", 25, 100, elapsed=30.0)
    assert line == "landing pairs: 25/100 (25%)  elapsed 0:30  ETA 1:30"


def test_progress_reports_each_tenth_once_and_the_end():
    lines: list[str] = []
    p = Progress("inferring boards", 37, lines.append)
    for _ in range(37):
        p.step()
    assert len(lines) == 10
    assert lines[-1].startswith("inferring boards: 37/37 (100%)")
    assert [int(l.split(": ")[1].split("/")[0]) for l in lines] == sorted({max(1, round(37 * k / 10)) for k in range(1, 11)})


def test_progress_with_fewer_items_than_steps_reports_every_item():
    lines: list[str] = []
    p = Progress("x", 3, lines.append)
    for _ in range(3):
        p.step()
    assert [l.split(" ")[1] for l in lines] == ["1/3", "2/3", "3/3"]
