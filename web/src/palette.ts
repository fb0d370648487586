// The colours of groups, in order: shared by the charts and the series (which has no DOM).

export const PALETTE = [
  "#f5a524", "#4aa3ff", "#5fd068", "#ff6b6b", "#b48cff", "#2ed3c6", "#ff9ad5", "#c7d95b", "#ff8a3d", "#8fa8c8",
];
