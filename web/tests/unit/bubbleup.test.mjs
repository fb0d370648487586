// BubbleUp's note when its shares come from a sample of the rows.

import { test } from "node:test";
import assert from "node:assert/strict";
import { load } from "./load.mjs";

const { samplingNote } = await load("bubbleup");

test("no note when every row was counted", () => {
  assert.equal(samplingNote(undefined), "");
});

test("the note says what was read of each side, at its own rate", () => {
  const note = samplingNote({
    selection_rows: [5000, 5000], baseline_rows: [1000000, 9995000],
    selection_blocks: null, baseline_blocks: { every: 10, block_rows: 15625 },
  });
  assert.equal(
    note,
    "shares from a sample: selection whole, baseline 1,000,000 of 9,995,000 rows (blocks of 15,625, 1 in 10); counts exact",
  );
  const both = samplingNote({
    selection_rows: [250000, 540000], baseline_rows: [250000, 9460000],
    selection_blocks: { every: 3, block_rows: 7812 }, baseline_blocks: { every: 38, block_rows: 4112 },
  });
  assert.match(both, /selection 250,000 of 540,000 rows \(blocks of 7,812, 1 in 3\), baseline 250,000 of 9,460,000 rows \(blocks of 4,112, 1 in 38\)/);
});
