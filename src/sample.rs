//! Synthetic e-commerce events and a plain-Rust oracle over them.
//!
//! This module owns two things:
//!
//! * [`generate`]: a deterministic generator of click-stream events
//!   (`view`, `click`, `register`, `add_to_cart`, `purchase`) laid out as
//!   columns ([`EventColumns`]) ready to be turned into a polars frame. The
//!   same [`SampleSpec`] always yields bit-identical columns on every platform:
//!   all randomness comes from ChaCha8 words, integers are drawn with our own
//!   unbiased reduction (not `rand`'s distributions, whose algorithms may change
//!   between releases), tables are plain `Vec`s (no hash-map iteration order),
//!   and floats only go through basic arithmetic, `sqrt`, `ln` and `exp`.
//! * The oracle ([`oracle_distinct_registered_users`],
//!   [`oracle_top_cities_by_sales`], [`oracle_sales_per_category`]): answers
//!   to the queries the test-suite also runs through polars, computed with a
//!   linear scan and `BTreeMap`/`BTreeSet` so that a polars bug cannot hide in
//!   both sides of a comparison.
//!
//! # Distributions
//!
//! Shaped to look like real shop traffic, so that partition sizes, group
//! cardinalities and skew in tests resemble production rather than uniform
//! noise:
//!
//! * **Time.** Each event first picks an hour of `[start, start + hours)` with
//!   probability proportional to a diurnal weight (UTC hour of day, treated as
//!   the shop's local time), then a uniform millisecond inside that hour.
//!   Weekdays trough at 3–5 am (over 10x below the peak), have a working-hours
//!   plateau and peak at 8–9 pm; weekends wake up later, are busier around
//!   midday and peak later in the evening. Rows are sorted by timestamp at the
//!   end (stable: equal timestamps keep generation order).
//! * **Event type.** Independent of everything else: view 60 %, click 25 %,
//!   add_to_cart 7 %, purchase 5 %, register 3 %.
//! * **Users.** Ids `1..=users`, shuffled so that activity does not follow id
//!   order. Activity is Zipf-like (weight `(rank + users / 200)^-1.3`): a few
//!   heavy users and a long tail; with the default spec the top 1 % of users
//!   make about a third of the events and about a quarter of the users that
//!   appear at all appear exactly once. `register` events instead
//!   pick a user uniformly, because sign-ups come from the long tail, not from
//!   the heavy users who registered long ago.
//! * **Cities.** ~40 real cities, Zipf-like (weight `1 / (rank + 1)`). Each user
//!   has a home city drawn from that distribution; 90 % of their events come
//!   from it, 10 % from a freshly drawn city (travel, VPNs, mobile carriers).
//! * **Categories.** 12 categories with hand-set, uneven shares (electronics and
//!   fashion lead, pets trail).
//! * **Products.** Each category owns a block of product ids
//!   (`(category index + 1) * 10_000 + 1 ..`); popularity inside a category is
//!   Zipf-like (weight `1 / (rank + 1)`).
//! * **Prices.** Every product has one fixed price, log-normal around its
//!   category's median (`median * exp(sigma * N(0, 1))`), floored at 0.99 and
//!   rounded to cents. `amount` carries that price on `add_to_cart` and
//!   `purchase` events and is `None` on all others.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use chrono::{DateTime, Datelike, TimeDelta, TimeZone, Timelike, Utc, Weekday};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

const HOUR_MS: i64 = 3_600_000;

/// Event types, in the index order used internally.
pub const EVENTS: [&str; 5] = ["view", "click", "register", "add_to_cart", "purchase"];

/// Share of each entry of [`EVENTS`], in per mille; integers so the mix is
/// exact and sums to 1000 by construction (checked in tests).
const EVENT_PER_MILLE: [u64; 5] = [600, 250, 30, 70, 50];
const REGISTER: u8 = 2;
const ADD_TO_CART: u8 = 3;
const PURCHASE: u8 = 4;

/// Cities in popularity-rank order: the first is the Zipf head.
pub const CITIES: [&str; 40] = [
    "London",
    "New York",
    "Paris",
    "Berlin",
    "Tokyo",
    "Madrid",
    "Los Angeles",
    "Toronto",
    "Chicago",
    "Sydney",
    "Amsterdam",
    "Milan",
    "Singapore",
    "Seoul",
    "Mumbai",
    "Sao Paulo",
    "Mexico City",
    "Barcelona",
    "Munich",
    "Vienna",
    "Stockholm",
    "Warsaw",
    "Dublin",
    "San Francisco",
    "Melbourne",
    "Lisbon",
    "Prague",
    "Zurich",
    "Copenhagen",
    "Oslo",
    "Helsinki",
    "Brussels",
    "Istanbul",
    "Dubai",
    "Bangkok",
    "Hong Kong",
    "Buenos Aires",
    "Cape Town",
    "Vancouver",
    "Auckland",
];

/// Everything the generator knows about a category, kept in one row so the
/// name, share, catalogue size and price level cannot drift apart.
struct CategoryProfile {
    name: &'static str,
    /// Relative share of events.
    weight: f64,
    /// Number of distinct products in the category.
    products: u32,
    /// Median product price.
    median_price: f64,
    /// Spread of `ln(price)`: wide for electronics, narrow for books.
    sigma: f64,
}

/// `(name, weight, products, median_price, sigma)`, one category per line.
const fn profile(
    name: &'static str,
    weight: f64,
    products: u32,
    median_price: f64,
    sigma: f64,
) -> CategoryProfile {
    CategoryProfile {
        name,
        weight,
        products,
        median_price,
        sigma,
    }
}

#[rustfmt::skip] // a table: one category per line reads better than rustfmt's 7-line literals
const CATEGORY_PROFILES: [CategoryProfile; 12] = [
    //      name           weight products median sigma
    profile("electronics", 18.0,  800,     120.0, 1.0),
    profile("fashion",     16.0,  1500,    35.0,  0.6),
    profile("home",        12.0,  900,     45.0,  0.8),
    profile("beauty",      10.0,  600,     18.0,  0.5),
    profile("books",       9.0,   2000,    14.0,  0.4),
    profile("sports",      8.0,   500,     40.0,  0.8),
    profile("toys",        7.0,   600,     22.0,  0.6),
    profile("grocery",     7.0,   1200,    6.0,   0.5),
    profile("health",      5.0,   400,     15.0,  0.6),
    profile("automotive",  3.0,   300,     55.0,  0.9),
    profile("garden",      3.0,   300,     30.0,  0.8),
    profile("pets",        2.0,   250,     20.0,  0.6),
];

/// Category names, most-visited first (derived from the category profiles, so
/// they cannot disagree).
pub const CATEGORIES: [&str; CATEGORY_PROFILES.len()] = {
    let mut names = [""; CATEGORY_PROFILES.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = CATEGORY_PROFILES[i].name;
        i += 1;
    }
    names
};

/// Relative traffic per UTC hour of day, Monday to Friday: dead at 3–5 am,
/// commute and office-hours plateau, the big peak after dinner.
const WEEKDAY_HOUR_WEIGHTS: [f64; 24] = [
    3.0, 2.0, 1.3, 0.8, 0.7, 0.9, 1.8, 3.2, 4.5, 5.2, 5.5, 5.8, //
    6.3, 6.0, 5.6, 5.5, 5.8, 6.5, 7.6, 8.8, 9.5, 8.9, 6.8, 4.6,
];

/// Saturday and Sunday: late nights, late mornings, a fuller afternoon.
const WEEKEND_HOUR_WEIGHTS: [f64; 24] = [
    4.2, 3.0, 2.0, 1.2, 0.8, 0.8, 1.1, 1.8, 3.0, 4.5, 5.9, 6.8, //
    7.2, 7.3, 7.2, 7.0, 7.0, 7.3, 7.8, 8.4, 9.0, 9.2, 7.9, 5.8,
];

/// User activity weight is `(rank + users * USER_ZIPF_OFFSET_PER_USER)^-USER_ZIPF_EXPONENT`.
/// A plain Zipf steep enough for a long tail of one-off visitors would hand
/// the top user several percent of all traffic; the offset flattens the head
/// (with the default spec the busiest user makes ~0.4 % of events, the top
/// 1 % of users about a third) while the exponent keeps ~25 % of the users who
/// appear at all appearing exactly once.
const USER_ZIPF_OFFSET_PER_USER: f64 = 0.005;
const USER_ZIPF_EXPONENT: f64 = 1.3;

/// Percentage of a user's events that come from somewhere other than home.
const TRAVEL_PERCENT: u64 = 10;

/// Cheapest product price: keeps every amount strictly positive after
/// rounding, and real shops have no 3-cent items.
const MIN_PRICE: f64 = 0.99;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSpec {
    /// Seeds every random stream: the same spec always yields the same events.
    pub seed: u64,
    /// First instant covered; events lie in `[start, start + hours)`.
    pub start: DateTime<Utc>,
    /// Number of hours covered.
    pub hours: u32,
    /// Number of events.
    pub rows: usize,
    /// Size of the user population (ids `1..=users`); not every user need appear.
    pub users: u32,
}

impl Default for SampleSpec {
    /// One week from Monday 2024-01-01T00:00Z, 200k events, 20k users: big
    /// enough for the distributions to show, small enough for debug-mode tests.
    fn default() -> Self {
        Self {
            seed: 42,
            start: Utc
                .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
                .single()
                .expect("2024-01-01T00:00Z is a valid UTC instant"),
            hours: 24 * 7,
            rows: 200_000,
            users: 20_000,
        }
    }
}

impl SampleSpec {
    /// The (exclusive) end of the covered interval, `start + hours`.
    pub fn end(&self) -> DateTime<Utc> {
        self.start + TimeDelta::hours(i64::from(self.hours))
    }
}

/// Column-oriented events, sorted by `ts_ms` ascending.
///
/// All columns have the same length; row `i` is the `i`-th entry of each.
/// Built by [`generate`], or by hand in tests (the oracle does not require
/// sorted rows, [`EventColumns::hour_ranges`] does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventColumns {
    /// Event time, epoch milliseconds UTC.
    pub ts_ms: Vec<i64>,
    /// User, `1..=users` for generated data.
    pub user_id: Vec<u64>,
    /// One of [`EVENTS`].
    pub event: Vec<&'static str>,
    /// One of [`CITIES`].
    pub city: Vec<&'static str>,
    /// One of [`CATEGORIES`].
    pub category: Vec<&'static str>,
    /// Product; generated ids are `(category index + 1) * 10_000 + k`, `k >= 1`.
    pub product_id: Vec<u32>,
    /// The product's price (cents precision) for `purchase` and `add_to_cart`; `None` otherwise.
    pub amount: Vec<Option<f64>>,
}

impl EventColumns {
    fn with_capacity(n: usize) -> Self {
        Self {
            ts_ms: Vec::with_capacity(n),
            user_id: Vec::with_capacity(n),
            event: Vec::with_capacity(n),
            city: Vec::with_capacity(n),
            category: Vec::with_capacity(n),
            product_id: Vec::with_capacity(n),
            amount: Vec::with_capacity(n),
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.ts_ms.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.ts_ms.is_empty()
    }

    /// Row ranges per hour: for each hour index `h` in `0..hours`, the
    /// half-open range of rows whose `ts_ms` lies in
    /// `[start + h hours, start + (h + 1) hours)`.
    ///
    /// Requires rows sorted by `ts_ms` (as [`generate`] returns them). For
    /// generated data with the same `start`/`hours` the ranges partition
    /// `0..len()` exactly; rows outside `[start, start + hours)` belong to no
    /// range. A `start` with sub-millisecond precision is rounded up to the
    /// next millisecond, as [`generate`] does.
    pub fn hour_ranges(&self, start: DateTime<Utc>, hours: u32) -> Vec<Range<usize>> {
        let start_ms = ceil_ms(start);
        // n + 1 boundaries, each found by binary search: O(hours · log len),
        // so slicing a large frame per hour costs nothing noticeable.
        let bounds: Vec<usize> = (0..=i64::from(hours))
            .map(|h| {
                let edge = start_ms + h * HOUR_MS;
                self.ts_ms.partition_point(|&t| t < edge)
            })
            .collect();
        bounds.windows(2).map(|w| w[0]..w[1]).collect()
    }
}

/// Generates `spec.rows` events (see the module doc for the distributions).
///
/// Deterministic: the same spec gives identical columns, on every platform.
/// Returns no rows when `hours` or `users` is 0, since no event can then
/// satisfy the contract (a time inside the interval, a user of the population).
pub fn generate(spec: &SampleSpec) -> EventColumns {
    if spec.rows == 0 || spec.hours == 0 || spec.users == 0 {
        return EventColumns::default();
    }
    let tables = Tables::build(spec);
    let start_ms = ceil_ms(spec.start);

    // Separate ChaCha stream for the rows, so the lookup tables above can
    // change shape without shifting the row draws (and vice versa).
    let mut rng = rng_for(spec.seed, Stream::Rows);
    let mut rows = Vec::with_capacity(spec.rows);
    for _ in 0..spec.rows {
        rows.push(tables.draw_row(&mut rng, start_ms));
    }
    let rows = sort_by_time(rows, spec.hours as usize);

    let mut out = EventColumns::with_capacity(rows.len());
    for r in &rows {
        let slot = r.product_slot as usize;
        out.ts_ms.push(r.ts_ms);
        out.user_id.push(tables.user_ids[r.user_rank as usize]);
        out.event.push(EVENTS[usize::from(r.event)]);
        out.city.push(CITIES[usize::from(r.city)]);
        out.category.push(CATEGORIES[usize::from(r.category)]);
        out.product_id.push(tables.product_ids[slot]);
        out.amount.push(match r.event {
            ADD_TO_CART | PURCHASE => Some(tables.product_prices[slot]),
            _ => None,
        });
    }
    out
}

/// Q1: number of distinct `user_id` with `event == "register"` and `ts_ms` in `[from_ms, to_ms)`.
pub fn oracle_distinct_registered_users(ev: &EventColumns, from_ms: i64, to_ms: i64) -> u64 {
    let users: BTreeSet<u64> = (0..ev.len())
        .filter(|&i| in_window(ev.ts_ms[i], from_ms, to_ms) && ev.event[i] == "register")
        .map(|i| ev.user_id[i])
        .collect();
    users.len() as u64
}

/// Q2: the top `n` cities by `sum(amount)` of `"purchase"` events with `ts_ms`
/// in `[from_ms, to_ms)`, largest first; ties broken by city name ascending.
///
/// Sums are accumulated in whole cents (the generator only produces cent
/// amounts), which makes them exact and independent of summation order: a tie
/// here is a real tie, not float noise. Compare polars' float sums against
/// these with a small tolerance. A city whose purchases all have a `None`
/// amount is listed with 0.0, as a polars `group_by(city).sum(amount)` would.
pub fn oracle_top_cities_by_sales(
    ev: &EventColumns,
    from_ms: i64,
    to_ms: i64,
    n: usize,
) -> Vec<(String, f64)> {
    let mut per_city: BTreeMap<&str, i64> = BTreeMap::new();
    for i in purchases_in_window(ev, from_ms, to_ms) {
        *per_city.entry(ev.city[i]).or_insert(0) += ev.amount[i].map_or(0, to_cents);
    }
    let mut ranked: Vec<(&str, i64)> = per_city.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    ranked
        .into_iter()
        .take(n)
        .map(|(city, cents)| (city.to_owned(), from_cents(cents)))
        .collect()
}

/// Q3: per category, `(category, sum(amount), count)` of `"purchase"` events
/// with `ts_ms` in `[from_ms, to_ms)`, sorted by category name. Only
/// categories with at least one purchase appear.
///
/// `count` counts purchase rows (like polars `len()`), including any with a
/// `None` amount; sums are exact cent sums as in [`oracle_top_cities_by_sales`].
pub fn oracle_sales_per_category(
    ev: &EventColumns,
    from_ms: i64,
    to_ms: i64,
) -> Vec<(String, f64, u64)> {
    let mut per_category: BTreeMap<&str, (i64, u64)> = BTreeMap::new();
    for i in purchases_in_window(ev, from_ms, to_ms) {
        let entry = per_category.entry(ev.category[i]).or_insert((0, 0));
        entry.0 += ev.amount[i].map_or(0, to_cents);
        entry.1 += 1;
    }
    per_category
        .into_iter()
        .map(|(category, (cents, count))| (category.to_owned(), from_cents(cents), count))
        .collect()
}

// ---------------------------------------------------------------------------
// Oracle helpers. Deliberately a linear scan over every row: no reliance on
// sort order, so hand-built unsorted inputs work and a sorting bug in the
// generator cannot make the oracle agree with a wrong answer.

fn in_window(ts_ms: i64, from_ms: i64, to_ms: i64) -> bool {
    from_ms <= ts_ms && ts_ms < to_ms
}

fn purchases_in_window(
    ev: &EventColumns,
    from_ms: i64,
    to_ms: i64,
) -> impl Iterator<Item = usize> + '_ {
    (0..ev.len())
        .filter(move |&i| in_window(ev.ts_ms[i], from_ms, to_ms) && ev.event[i] == "purchase")
}

fn to_cents(amount: f64) -> i64 {
    // `round`, not truncation: 19.99 * 100.0 is 1998.9999999999998.
    (amount * 100.0).round() as i64
}

fn from_cents(cents: i64) -> f64 {
    // One correctly rounded division: the nearest f64 to the decimal value.
    cents as f64 / 100.0
}

// ---------------------------------------------------------------------------
// Generator internals.

/// Epoch milliseconds of `t`, rounded up so that `[ceil_ms(start), ...)` never
/// reaches before `start`.
fn ceil_ms(t: DateTime<Utc>) -> i64 {
    let ms = t.timestamp_millis();
    if t.timestamp_subsec_nanos() % 1_000_000 == 0 {
        ms
    } else {
        ms + 1
    }
}

/// Independent ChaCha streams of one seed: each consumer gets its own, so the
/// number of draws one makes never shifts another's.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Users = 1,
    Products = 2,
    Rows = 3,
}

fn rng_for(seed: u64, stream: Stream) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream as u64);
    rng
}

/// Uniform in `[0, 1)` with 53 random bits; the exact `rand` algorithm,
/// written out so a `rand` upgrade cannot change the stream's meaning.
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (rng.next_u64() >> 11) as f64 * SCALE
}

/// Uniform in `0..n` (`n > 0`), unbiased: Lemire's nearly divisionless
/// multiply-and-reject. Used instead of `random_range` because `rand` does not
/// promise a stable algorithm across versions.
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    debug_assert!(n > 0);
    let mut m = u128::from(rng.next_u64()) * u128::from(n);
    // Low words below `2^64 mod n` would over-represent some results. That
    // threshold is < n, so the (slow) modulo is only needed when the low word
    // is < n, which is rare for the small n used here.
    if (m as u64) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (m >> 64) as u64
}

/// Standard normal by Marsaglia's polar method: needs only `sqrt` (exact in
/// IEEE 754) and `ln`, not the `sin`/`cos` of Box–Muller, whose results vary
/// more between libms.
fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    loop {
        let u = 2.0f64.mul_add(unit(rng), -1.0);
        let v = 2.0f64.mul_add(unit(rng), -1.0);
        let s = u.mul_add(u, v * v);
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * s.ln() / s).sqrt();
        }
    }
}

/// A weighted choice over indices `0..n`: running sums of the weights, searched
/// for the first sum above `u * total`. A guide table (Chen & Asau's indexed
/// search) maps each of `2^k` equal slices of `[0, 1)` to where that search
/// can start, so a draw costs a lookup and about one comparison instead of a
/// full binary search. These draws were the profile's hot spot; the guide
/// cut about a quarter of the CPU time of a 10M-row generation.
/// The guide only skips entries the search would pass anyway, so the chosen
/// index is exactly `cum.partition_point(|&c| c <= u * total)`.
#[derive(Debug)]
struct Weighted {
    cum: Vec<f64>,
    guide: Vec<u32>,
}

impl Weighted {
    /// `weights` must be non-empty, positive and finite.
    fn new(weights: impl Iterator<Item = f64>) -> Self {
        let mut total = 0.0;
        let cum: Vec<f64> = weights
            .map(|w| {
                total += w;
                total
            })
            .collect();
        let last = cum.len() - 1;
        // A power of two keeps `slice / len` and `u * len` exact, which is
        // what makes every guide entry a safe (never too late) start.
        let slices = cum.len().next_power_of_two();
        let guide = (0..slices)
            .map(|slice| {
                let lower = (slice as f64 / slices as f64) * total;
                cum.partition_point(|&c| c <= lower).min(last) as u32
            })
            .collect();
        Self { cum, guide }
    }

    fn index_for(&self, u: f64) -> usize {
        let last = self.cum.len() - 1;
        let x = u * self.cum[last];
        let mut i = self.guide[(u * self.guide.len() as f64) as usize] as usize;
        // Stopping at `last` guards the rounding-only case of x reaching the total.
        while i < last && self.cum[i] <= x {
            i += 1;
        }
        i
    }

    fn pick(&self, rng: &mut ChaCha8Rng) -> usize {
        self.index_for(unit(rng))
    }
}

/// Zipf-like weights `(rank + offset)^-exponent` for ranks `0..n`, via
/// `exp`/`ln` rather than `powf`.
fn zipf(n: usize, offset: f64, exponent: f64) -> impl Iterator<Item = f64> {
    (0..n).map(move |rank| (-exponent * (rank as f64 + offset).ln()).exp())
}

/// One generated event before sorting: small indices instead of strings so a
/// 10M-row sort moves 24-byte records.
#[derive(Debug, Clone, Copy, Default)]
struct Row {
    ts_ms: i64,
    /// Hour index inside the spec, the bucket of the counting sort.
    hour: u32,
    user_rank: u32,
    /// Index into the flat product tables.
    product_slot: u32,
    event: u8,
    city: u8,
    category: u8,
}

/// Everything precomputed before the row loop, so that drawing a row is a few
/// table lookups and no allocation.
#[derive(Debug)]
struct Tables {
    hours: Weighted,
    users: u64,
    activity: Weighted,
    /// Activity rank -> user id.
    user_ids: Vec<u64>,
    /// Activity rank -> index into CITIES.
    home_city: Vec<u8>,
    cities: Weighted,
    categories: Weighted,
    /// Per category: popularity of its products.
    products: Vec<Weighted>,
    /// Per category: first slot of its products in the flat tables below.
    product_first_slot: Vec<u32>,
    product_ids: Vec<u32>,
    product_prices: Vec<f64>,
}

impl Tables {
    fn build(spec: &SampleSpec) -> Self {
        let hours = Weighted::new((0..spec.hours).map(|h| {
            let t = spec.start + TimeDelta::hours(i64::from(h));
            let curve = match t.weekday() {
                Weekday::Sat | Weekday::Sun => &WEEKEND_HOUR_WEIGHTS,
                _ => &WEEKDAY_HOUR_WEIGHTS,
            };
            curve[t.hour() as usize]
        }));

        let cities = Weighted::new(zipf(CITIES.len(), 1.0, 1.0));

        let mut rng = rng_for(spec.seed, Stream::Users);
        let users = spec.users as usize;
        // The offset scales with the population so the shape (share of heavy
        // and of one-off users) does not depend on how many users there are.
        let offset = (spec.users as f64 * USER_ZIPF_OFFSET_PER_USER).max(1.0);
        let activity = Weighted::new(zipf(users, offset, USER_ZIPF_EXPONENT));
        // Fisher–Yates: rank -> id, so heavy users are not simply ids 1, 2, 3.
        let mut user_ids: Vec<u64> = (1..=u64::from(spec.users)).collect();
        for i in (1..users).rev() {
            let j = below(&mut rng, i as u64 + 1) as usize;
            user_ids.swap(i, j);
        }
        let home_city = (0..users).map(|_| cities.pick(&mut rng) as u8).collect();

        let mut rng = rng_for(spec.seed, Stream::Products);
        let mut products = Vec::with_capacity(CATEGORY_PROFILES.len());
        let mut product_first_slot = Vec::with_capacity(CATEGORY_PROFILES.len());
        let mut product_ids = Vec::new();
        let mut product_prices = Vec::new();
        for (c, profile) in CATEGORY_PROFILES.iter().enumerate() {
            products.push(Weighted::new(zipf(profile.products as usize, 1.0, 1.0)));
            product_first_slot.push(product_ids.len() as u32);
            let first_id = (c as u32 + 1) * 10_000 + 1;
            for k in 0..profile.products {
                product_ids.push(first_id + k);
                let price =
                    profile.median_price * (profile.sigma * standard_normal(&mut rng)).exp();
                product_prices.push(from_cents(to_cents(price.max(MIN_PRICE))));
            }
        }

        Self {
            hours,
            users: u64::from(spec.users),
            activity,
            user_ids,
            home_city,
            cities,
            categories: Weighted::new(CATEGORY_PROFILES.iter().map(|p| p.weight)),
            products,
            product_first_slot,
            product_ids,
            product_prices,
        }
    }

    fn draw_row(&self, rng: &mut ChaCha8Rng, start_ms: i64) -> Row {
        let hour = self.hours.pick(rng);
        let ts_ms = start_ms + hour as i64 * HOUR_MS + below(rng, HOUR_MS as u64) as i64;

        let roll = below(rng, 1000);
        let mut event = 0;
        let mut acc = EVENT_PER_MILLE[0];
        while roll >= acc {
            event += 1;
            acc += EVENT_PER_MILLE[event];
        }
        let event = event as u8;

        let user_rank = if event == REGISTER {
            below(rng, self.users) as usize
        } else {
            self.activity.pick(rng)
        };
        let city = if below(rng, 100) < TRAVEL_PERCENT {
            self.cities.pick(rng) as u8
        } else {
            self.home_city[user_rank]
        };
        let category = self.categories.pick(rng);
        let product = self.products[category].pick(rng);

        Row {
            ts_ms,
            hour: hour as u32,
            user_rank: user_rank as u32,
            product_slot: self.product_first_slot[category] + product as u32,
            event,
            city,
            category: category as u8,
        }
    }
}

/// Stable sort by timestamp: a counting sort on the hour (stable, O(n)), then
/// a stable sort of each hour's bucket, which is small and cache-friendly.
/// Equal timestamps therefore keep generation order, the deterministic
/// tie-break.
fn sort_by_time(rows: Vec<Row>, hours: usize) -> Vec<Row> {
    let mut starts = vec![0usize; hours + 1];
    for r in &rows {
        starts[r.hour as usize + 1] += 1;
    }
    for h in 0..hours {
        starts[h + 1] += starts[h];
    }
    let mut next = starts.clone();
    let mut sorted = vec![Row::default(); rows.len()];
    for r in rows {
        let slot = &mut next[r.hour as usize];
        sorted[*slot] = r;
        *slot += 1;
    }
    for h in 0..hours {
        sorted[starts[h]..starts[h + 1]].sort_by_key(|r| r.ts_ms);
    }
    sorted
}

#[cfg(test)]
mod tests;
