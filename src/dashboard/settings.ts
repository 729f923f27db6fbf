/** How often each page's live part re-fetches itself, seconds. */
export const DATABASE_REFRESH_SECONDS = 5;
