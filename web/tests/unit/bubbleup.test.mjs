// BubbleUp's note when its shares come from a sample of the rows.

import { test } from "node:test";
import assert from "node:assert/strict";
import { load } from "./load.mjs";

const { samplingNote } = await load("bubbleup");

test("no note when every row was counted", () => {
  assert.equal(samplingNote(undefined), "");
});

test("the note says what was read of each side", () => {
  const note = samplingNote({ selection_rows: [5000, 5000], baseline_rows: [1000000, 9995000], every: 10, block_rows: 15625 });
  assert.equal(
    note,
    "shares from a sample (blocks of 15,625 rows, 1 in 10): selection whole, baseline 1,000,000 of 9,995,000 rows; counts exact",
  );
  const both = samplingNote({ selection_rows: [200000, 2000000], baseline_rows: [800000, 8000000], every: 10, block_rows: 15625 });
  assert.match(both, /selection 200,000 of 2,000,000 rows, baseline 800,000 of 8,000,000 rows/);
});
