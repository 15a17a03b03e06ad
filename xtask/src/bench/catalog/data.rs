//! The generated catalog: a category tree, brands and products with realistic text, all
//! derived from a product's number (so the store, the import file and the COPY baseline agree
//! without being kept in memory).

use uuid::Uuid;

/// Root categories; each has [`MIDS_PER_ROOT`] children, and the leaves are spread over those.
const ROOTS: usize = 10;
const MIDS_PER_ROOT: usize = 4;
/// A product description's limit (`domain::product::Description::MAX_CHARS`).
const DESCRIPTION_MAX_CHARS: usize = 500;
/// Categories in all, over three levels.
pub const CATEGORIES: usize = 200;

pub const BRANDS: [&str; 20] = [
    "Acme",
    "Nordic Home",
    "Lumen",
    "Forge",
    "Orbit",
    "Verde",
    "Atlas",
    "Kestrel",
    "Brightline",
    "Oakridge",
    "Solace",
    "Tundra",
    "Mistral",
    "Pioneer",
    "Halcyon",
    "Zenith",
    "Cobalt",
    "Juniper",
    "Ember",
    "Quill",
];

const ADJECTIVES: [&str; 30] = [
    "compact",
    "classic",
    "modern",
    "rustic",
    "portable",
    "wireless",
    "ergonomic",
    "premium",
    "vintage",
    "foldable",
    "adjustable",
    "lightweight",
    "heavy",
    "smart",
    "silent",
    "durable",
    "elegant",
    "minimal",
    "waterproof",
    "cordless",
    "outdoor",
    "indoor",
    "deluxe",
    "slim",
    "large",
    "small",
    "bright",
    "soft",
    "sturdy",
    "handmade",
];
const MATERIALS: [&str; 20] = [
    "oak",
    "walnut",
    "steel",
    "aluminium",
    "bamboo",
    "ceramic",
    "glass",
    "leather",
    "cotton",
    "linen",
    "wool",
    "marble",
    "brass",
    "copper",
    "granite",
    "rattan",
    "velvet",
    "silicone",
    "carbon",
    "porcelain",
];
/// What products are. Each is in about one name in forty, and in as many descriptions again.
pub const NOUNS: [&str; 40] = [
    "lamp",
    "chair",
    "table",
    "kettle",
    "blender",
    "speaker",
    "backpack",
    "jacket",
    "mug",
    "vase",
    "shelf",
    "desk",
    "pillow",
    "blanket",
    "toaster",
    "headphones",
    "watch",
    "wallet",
    "umbrella",
    "bottle",
    "knife",
    "pan",
    "rug",
    "mirror",
    "clock",
    "stool",
    "sofa",
    "bench",
    "basket",
    "candle",
    "scarf",
    "boots",
    "helmet",
    "tent",
    "grill",
    "drill",
    "router",
    "keyboard",
    "monitor",
    "camera",
];
const FILLER: [&str; 48] = [
    "designed",
    "for",
    "everyday",
    "use",
    "with",
    "a",
    "finish",
    "that",
    "lasts",
    "years",
    "easy",
    "to",
    "clean",
    "and",
    "built",
    "from",
    "carefully",
    "selected",
    "materials",
    "fits",
    "any",
    "room",
    "home",
    "office",
    "travel",
    "comes",
    "in",
    "several",
    "colours",
    "tested",
    "by",
    "our",
    "team",
    "perfect",
    "gift",
    "quality",
    "comfort",
    "style",
    "warranty",
    "included",
    "simple",
    "assembly",
    "sustainably",
    "sourced",
    "great",
    "value",
    "the",
    "of",
];

/// A category of the tree: its parent (an earlier index) and its depth (0 for a root).
#[derive(Debug, Clone, PartialEq)]
pub struct CategorySpec {
    pub parent: Option<usize>,
    pub depth: u8,
    pub name: String,
    pub slug: String,
}

/// The [`CATEGORIES`] categories, parents before children: [`ROOTS`] roots, each with
/// [`MIDS_PER_ROOT`] children, and the remaining leaves spread round-robin over those.
pub fn category_tree() -> Vec<CategorySpec> {
    let mut tree = Vec::with_capacity(CATEGORIES);
    for r in 0..ROOTS {
        let noun = NOUNS[r * 4];
        tree.push(CategorySpec { parent: None, depth: 0, name: title(&format!("{noun}s")), slug: format!("{noun}s") });
    }
    for m in 0..ROOTS * MIDS_PER_ROOT {
        let root = m / MIDS_PER_ROOT;
        let adjective = ADJECTIVES[m % ADJECTIVES.len()];
        let slug = format!("{}-{adjective}-{m}", tree[root].slug);
        tree.push(CategorySpec {
            parent: Some(root),
            depth: 1,
            name: title(&format!("{adjective} {}", tree[root].slug)),
            slug,
        });
    }
    let mids = ROOTS..ROOTS + ROOTS * MIDS_PER_ROOT;
    for l in 0..CATEGORIES - tree.len() {
        let parent = mids.start + l % mids.len();
        let material = MATERIALS[l % MATERIALS.len()];
        let slug = format!("{}-{material}-{l}", tree[parent].slug);
        tree.push(CategorySpec {
            parent: Some(parent),
            depth: 2,
            name: title(&format!("{material} {}", tree[parent].name.to_lowercase())),
            slug,
        });
    }
    tree
}

/// The indexes of the categories products are listed in: the leaves.
pub fn leaves(tree: &[CategorySpec]) -> Vec<usize> {
    (0..tree.len()).filter(|&i| !tree.iter().any(|c| c.parent == Some(i))).collect()
}

pub fn category_id(index: usize) -> Uuid {
    Uuid::from_u128(0xca7e_0000_0000_4000_8000_0000_0000_0000 | index as u128)
}

pub fn product_id(n: usize) -> Uuid {
    Uuid::from_u128(0xca7a_0000_0000_4000_8000_0000_0000_0000 | n as u128)
}

/// Generated product `n` (`GEN-n`) or imported line `n` (`IMP-n`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProductSpec {
    pub sku: String,
    pub name: String,
    pub description: String,
    pub price_cents: i64,
    pub brand: &'static str,
    /// Index into the category tree (a leaf).
    pub category: usize,
    pub on_hand: i64,
    /// One in ten is a draft; the rest are published.
    pub draft: bool,
}

/// Product `n` of the series `prefix`, drawn from a generator seeded by both.
pub fn product_spec(prefix: &str, n: usize, leaves: &[usize]) -> ProductSpec {
    let mut rng = Rng(n as u64 ^ if prefix == "GEN" { 0 } else { 0x9e37_79b9_7f4a_7c15 });
    let noun = rng.pick(&NOUNS);
    let mut name = String::new();
    if rng.below(2) == 0 {
        name.push_str(rng.pick(&ADJECTIVES));
        name.push(' ');
    }
    name.push_str(rng.pick(&ADJECTIVES));
    name.push(' ');
    name.push_str(rng.pick(&MATERIALS));
    name.push(' ');
    name.push_str(noun);
    name.push_str(&format!(" {}{}", ["S", "M", "X", "Pro "][rng.below(4)], 100 + rng.below(900)));
    let related = rng.pick(&NOUNS);
    let mut description = String::new();
    for sentence in 0..3 + rng.below(3) {
        let words = 8 + rng.below(8);
        for w in 0..words {
            let word = match (sentence, w, rng.below(10)) {
                (0, 1, _) => noun,
                (1, 2, _) => related,
                (_, _, 0) => rng.pick(&ADJECTIVES),
                (_, _, 1) => rng.pick(&MATERIALS),
                _ => rng.pick(&FILLER),
            };
            if w == 0 {
                description.push_str(&title(word));
            } else {
                description.push(' ');
                description.push_str(word);
            }
        }
        description.push_str(". ");
    }
    description.pop();
    // The domain's limit: drop whole sentences until it fits.
    while description.chars().count() > DESCRIPTION_MAX_CHARS {
        let cut = description[..description.len() - 1].rfind(". ").map_or(DESCRIPTION_MAX_CHARS, |at| at + 1);
        description.truncate(cut);
    }
    // Prices from 1.00 to about 2,000.00, most below 100.
    let price_cents = 100 + (rng.unit().powi(3) * 199_900.0) as i64;
    ProductSpec {
        sku: format!("{prefix}-{n}"),
        name: title(&name),
        description,
        price_cents,
        brand: rng.pick(&BRANDS),
        category: leaves[rng.below(leaves.len())],
        on_hand: if rng.below(7) == 0 { 0 } else { 1 + rng.below(500) as i64 },
        draft: rng.below(10) == 0,
    }
}

fn title(words: &str) -> String {
    let mut chars = words.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// splitmix64: small, fast and good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn the_tree_has_200_categories_on_three_levels_parents_first() {
        let tree = category_tree();
        assert_eq!(tree.len(), CATEGORIES);
        for (i, category) in tree.iter().enumerate() {
            match category.parent {
                None => assert_eq!(category.depth, 0),
                Some(parent) => {
                    assert!(parent < i, "parent {parent} of {i} comes later");
                    assert_eq!(category.depth, tree[parent].depth + 1);
                }
            }
        }
        let by_depth = |d| tree.iter().filter(|c| c.depth == d).count();
        assert_eq!((by_depth(0), by_depth(1), by_depth(2)), (10, 40, 150));
        let slugs: HashSet<&str> = tree.iter().map(|c| c.slug.as_str()).collect();
        assert_eq!(slugs.len(), CATEGORIES, "slugs are unique");
        assert!(tree
            .iter()
            .all(|c| c.slug.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')));
        let leaves = leaves(&tree);
        assert_eq!(leaves.len(), 150);
        assert!(leaves.iter().all(|&l| tree[l].depth == 2), "every middle category has children");
    }

    #[test]
    fn products_are_deterministic_varied_and_mostly_published() {
        let tree = category_tree();
        let leaves = leaves(&tree);
        assert_eq!(product_spec("GEN", 7, &leaves), product_spec("GEN", 7, &leaves));
        assert_ne!(product_spec("GEN", 7, &leaves).name, product_spec("IMP", 7, &leaves).name);
        let specs: Vec<ProductSpec> = (0..10_000).map(|n| product_spec("GEN", n, &leaves)).collect();
        let drafts = specs.iter().filter(|s| s.draft).count();
        assert!((800..1200).contains(&drafts), "{drafts} drafts");
        let brands: HashSet<&str> = specs.iter().map(|s| s.brand).collect();
        assert_eq!(brands.len(), BRANDS.len());
        let categories: HashSet<usize> = specs.iter().map(|s| s.category).collect();
        assert_eq!(categories.len(), leaves.len());
        for spec in &specs {
            assert!(spec.name.split(' ').count() >= 4, "{}", spec.name);
            assert!(spec.description.split(' ').count() >= 16, "{}", spec.description);
            assert!(spec.description.len() <= 500 && spec.description.ends_with('.'), "{}", spec.description);
            assert!((100..=200_000).contains(&spec.price_cents));
        }
        // "lamp" is a common word, not a universal one: a few percent of the products.
        let lamps = specs.iter().filter(|s| format!("{} {}", s.name, s.description).contains("lamp")).count();
        assert!((200..1000).contains(&lamps), "{lamps} lamps");
    }
}
