// Whether this Node runs TypeScript itself without a warning: type stripping is on by default,
// and silent, from 22.18 on in 22.x and from 24.3 on (23.6 to 24.2 warn at every start, which
// also fails a test). Shared by the bin and the test setup so the two agree.
const [major, minor] = process.versions.node.split(".").map(Number);

export const stripsTypes = Boolean(process.features.typescript) && (major === 22 ? minor >= 18 : major > 24 || (major === 24 && minor >= 3));
