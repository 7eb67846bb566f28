"""English word lists of the open-vocabulary workload (`open_vocab`), each roughly in order of popularity.

The generator draws from each list with a Zipf law over this order and
combines the draws freely (a subject is an adjective, a noun and an attribute;
a setting is a place, a city and a time of day), so the space it samples has
no finite head: billions of scenes, most of them seen once. Foreign-language
lists are in `open_vocab_languages`.

Kinds: a subject's kind picks the actions that fit it (a burger sizzles, it
does not dance — except in `SURREAL_ACTIONS`, which rare ideas use on purpose).
"""

from __future__ import annotations

NOUNS = {
    "animal": (
        "cat", "dog", "corgi", "golden retriever", "kitten", "puppy", "fox", "panda", "shiba inu", "capybara",
        "husky", "owl", "horse", "penguin", "tiger", "lion", "raccoon", "hamster", "rabbit", "wolf", "red panda",
        "sea turtle", "octopus", "hummingbird", "elephant", "koala", "sloth", "otter", "frog", "bear", "deer",
        "dolphin", "whale", "shark", "eagle", "parrot", "flamingo", "jellyfish", "butterfly", "snow leopard",
        "polar bear", "giraffe", "zebra", "hedgehog", "chameleon", "duck", "goose", "pigeon", "squirrel",
        "alpaca", "llama", "camel", "crab", "lobster", "seal", "pug", "dachshund", "border collie", "french bulldog",
        "maine coon", "siamese cat", "black cat", "tabby cat", "axolotl", "bee", "ladybug", "snail", "peacock",
        "cheetah", "gorilla", "chimpanzee", "kangaroo", "orca", "manta ray", "koi fish", "goldfish", "beagle",
        "chicken", "rooster", "pig", "cow", "goat", "sheep", "donkey", "bat", "moose", "lynx", "mouse", "ferret",
        "tortoise", "iguana", "crow", "swan", "puffin", "walrus", "hippo", "rhino", "meerkat", "pangolin",
        "mantis", "firefly", "dragonfly", "stingray", "seahorse", "anglerfish", "lemur", "tapir",
    ),
    "person": (
        "woman", "man", "girl", "boy", "astronaut", "old man", "old woman", "samurai", "knight", "ballerina",
        "chef", "little girl", "skateboarder", "surfer", "dancer", "cowboy", "ninja", "soldier", "businessman",
        "grandma", "grandpa", "fisherman", "street musician", "dj", "boxer", "monk", "wizard", "witch", "pirate",
        "detective", "scientist", "firefighter", "nurse", "doctor", "teacher", "farmer", "cyclist", "runner",
        "violinist", "guitarist", "pianist", "singer", "rapper", "bride", "groom", "couple", "baby", "toddler",
        "teenager", "student", "barista", "mechanic", "pilot", "diver", "climber", "hiker", "skier", "snowboarder",
        "gymnast", "figure skater", "footballer", "basketball player", "tennis player", "yoga teacher", "painter",
        "sculptor", "photographer", "tourist", "influencer", "streamer", "gamer", "office worker", "delivery rider",
        "taxi driver", "police officer", "king", "queen", "princess", "prince", "viking", "gladiator", "geisha",
        "clown", "magician", "mime", "cheerleader", "marathon runner", "archer", "blacksmith", "baker",
        "shepherd", "beekeeper", "lifeguard", "street vendor", "model", "hacker", "mermaid", "vampire", "zombie",
    ),
    "creature": (
        "dragon", "robot", "baby dragon", "unicorn", "phoenix", "alien", "cyborg", "android", "giant mech",
        "fairy", "ghost", "golem", "griffin", "kitsune", "kraken", "yeti", "sea serpent", "werewolf", "centaur",
        "troll", "goblin", "elf", "dwarf", "tree spirit", "slime monster", "kaiju", "sphinx", "pegasus", "hydra",
        "cat girl", "space marine", "android girl", "tiny robot", "rusty robot", "drone", "hologram", "skeleton",
        "scarecrow", "snowman", "gingerbread man", "teddy bear", "rubber duck", "paper crane", "toy soldier",
        "living shadow", "fire elemental", "crystal golem", "forest guardian", "dinosaur", "t-rex", "mammoth",
    ),
    "vehicle": (
        "car", "sports car", "motorcycle", "train", "steam train", "bullet train", "truck", "bus", "taxi",
        "sailboat", "pirate ship", "spaceship", "rocket", "hot air balloon", "airplane", "fighter jet", "helicopter",
        "submarine", "bicycle", "scooter", "tram", "tractor", "ferrari", "lamborghini", "tesla", "jeep",
        "vintage convertible", "monster truck", "race car", "formula 1 car", "cargo ship", "canoe", "kayak",
        "zeppelin", "flying car", "hoverbike", "tank", "ambulance", "fire truck", "ice cream truck", "camper van",
    ),
    "food": (
        "burger", "pizza", "bowl of ramen", "cup of coffee", "chocolate cake", "sushi platter", "steak", "pancakes",
        "croissant", "ice cream cone", "bowl of noodles", "taco", "plate of pasta", "cheesecake", "donut",
        "bubble tea", "milkshake", "bowl of pho", "plate of dumplings", "cocktail", "glass of wine", "pint of beer",
        "lemonade", "smoothie", "fried chicken", "hot dog", "croissant sandwich", "bowl of fruit", "strawberry",
        "watermelon", "avocado toast", "cupcake", "box of macarons", "bagel", "paella", "curry", "bibimbap", "kebab",
        "birthday cake", "waffle", "plate of churros", "hot chocolate", "espresso", "matcha latte", "soup", "salad",
    ),
    "product": (
        "perfume bottle", "sneaker", "watch", "smartphone", "pair of headphones", "lipstick", "skincare bottle",
        "soda can", "energy drink", "laptop", "gaming controller", "mechanical keyboard", "camera", "handbag",
        "pair of sunglasses", "candle", "bottle of whiskey", "water bottle", "electric toothbrush", "vr headset",
        "drone", "smartwatch", "pair of earbuds", "coffee machine", "backpack", "ring", "necklace", "teapot", "vase",
        "book", "guitar", "vinyl record", "toy car", "lamp", "chair",
    ),
    "scene": (
        "waterfall", "volcano", "thunderstorm", "aurora", "ocean wave", "lighthouse", "castle", "cabin",
        "city skyline", "forest", "mountain", "desert", "glacier", "canyon", "lake", "river", "cherry blossom tree",
        "tornado", "galaxy", "nebula", "planet", "moon", "sunset", "sunrise", "rainbow", "field of flowers",
        "village", "temple", "cathedral", "bridge", "skyscraper", "abandoned house", "treehouse", "windmill",
        "campfire", "fireworks display", "night market", "train station", "snow globe", "bonsai tree",
        "coral reef", "rice terrace", "space station", "black hole", "lava lake", "iceberg", "clock tower",
    ),
}

ADJECTIVES = {
    "animal": (
        "fluffy", "tiny", "cute", "giant", "baby", "old", "fat", "orange", "white", "black", "grumpy", "sleepy",
        "happy", "wet", "muddy", "majestic", "wild", "chubby", "skinny", "spotted", "striped", "golden", "grey",
        "brown", "red", "curious", "lazy", "angry", "scared", "hungry", "young", "mechanical", "glowing",
        "transparent", "pixelated", "one-eyed", "three-legged", "albino", "elegant", "clumsy",
    ),
    "person": (
        "young", "old", "beautiful", "tired", "happy", "sad", "elderly", "tall", "short", "blonde", "redheaded",
        "bearded", "bald", "smiling", "crying", "angry", "mysterious", "lonely", "confused", "brave", "nervous",
        "shy", "tattooed", "muscular", "skinny", "japanese", "korean", "african", "italian", "mexican", "indian",
        "scandinavian", "brazilian", "chinese", "french", "futuristic", "medieval", "victorian", "1920s",
        "cyberpunk", "retired", "famous", "drunk", "sleepy",
    ),
    "creature": (
        "giant", "tiny", "ancient", "friendly", "evil", "glowing", "rusty", "crystal", "golden", "shadowy",
        "mechanical", "baby", "sleepy", "wise", "cute", "terrifying", "translucent", "neon", "stone", "frozen",
        "fiery", "wooden", "broken", "silver", "holographic", "lonely",
    ),
    "vehicle": (
        "red", "black", "white", "yellow", "vintage", "rusty", "futuristic", "old", "shiny", "tiny", "giant",
        "abandoned", "electric", "armored", "neon", "wooden", "steampunk", "burning", "flying", "toy",
    ),
    "food": (
        "juicy", "steaming", "giant", "tiny", "homemade", "fancy", "melting", "crispy", "fresh", "spicy",
        "golden", "colorful", "messy", "perfect", "rainbow", "frozen", "glazed", "delicious",
    ),
    "product": (
        "luxury", "minimalist", "black", "white", "gold", "transparent", "matte", "chrome", "pink", "vintage",
        "futuristic", "handmade", "wooden", "glass", "eco-friendly", "limited edition", "red", "neon",
    ),
    "scene": (
        "huge", "ancient", "frozen", "glowing", "abandoned", "misty", "colorful", "lonely", "beautiful", "massive",
        "distant", "burning", "floating", "hidden", "tiny", "crumbling", "futuristic", "magical",
    ),
}

ATTRIBUTES = {
    "animal": (
        "wearing sunglasses", "wearing a tiny hat", "in a knitted sweater", "with a red scarf", "wearing a crown",
        "with glowing eyes", "wearing a superhero cape", "with a bow tie", "in a space suit", "wearing headphones",
        "with wings", "covered in snow", "with a flower on its head", "wearing a chef hat", "in a raincoat",
        "wearing a backpack", "with a tiny umbrella", "wearing armor", "with rainbow fur", "wearing a party hat",
        "with a monocle", "wearing boots", "in a pirate costume", "wearing a santa hat", "with a cigar",
    ),
    "person": (
        "in a red dress", "in a white dress", "with a red umbrella", "in a yellow raincoat", "in a black suit",
        "with long silver hair", "wearing a leather jacket", "in a hoodie", "with a guitar", "in a kimono",
        "in a hanbok", "in a wedding dress", "wearing a gas mask", "with a katana", "in silver armor",
        "with headphones", "in a spacesuit", "wearing vr goggles", "with a backpack", "in a trench coat",
        "with freckles", "with blue hair", "in a school uniform", "in pajamas", "wearing a crown",
        "with tattoos", "in a tuxedo", "with a dog on a leash", "carrying flowers", "in a sari", "in a cape",
    ),
    "creature": (
        "with glowing eyes", "covered in moss", "made of crystal", "with huge wings", "breathing smoke",
        "with neon lights", "wearing a cape", "with a broken arm", "holding a lantern", "with golden scales",
        "covered in rust", "with a tiny plant on its head", "with a cracked face", "wrapped in chains",
    ),
    "vehicle": (
        "with its headlights on", "covered in snow", "covered in graffiti", "with flames painted on it",
        "with neon underglow", "full of balloons", "with a surfboard on the roof", "leaving a trail of smoke",
    ),
    "food": (
        "with melted cheese", "with steam rising", "with chocolate sauce", "with sprinkles", "with whipped cream",
        "on a wooden board", "on a white plate", "with fresh herbs", "dripping with syrup", "with a candle on top",
    ),
    "product": (
        "on a marble table", "with water droplets", "surrounded by flowers", "with its logo glowing",
        "on a white background", "on a black background", "surrounded by ice", "wrapped in silk",
    ),
    "scene": (
        "under the stars", "covered in snow", "in the fog", "surrounded by fireflies", "reflected in the water",
        "lit by lightning", "overgrown with vines", "with smoke rising",
    ),
}

# Subjects that are already whole phrases: groups, plurals and people with names of a kind.
GROUP_SUBJECTS = (
    "two cats", "a group of friends", "a family of ducks", "a herd of wild horses", "a flock of birds",
    "a pack of wolves", "a crowd of people", "two kids", "an old couple", "a school of fish", "three puppies",
    "a marching band", "a pod of dolphins", "a team of astronauts", "two robots", "a swarm of fireflies",
    "a family having dinner", "a choir", "two dragons", "a band of pirates", "a group of penguins",
)

ACTIONS = {
    "animal": (
        "running", "sleeping", "playing", "jumping", "walking", "swimming", "flying", "eating", "dancing",
        "running towards the camera", "looking at the camera", "chasing a butterfly", "playing in the snow",
        "catching a frisbee", "rolling in the grass", "yawning", "stretching", "sneezing", "chasing its tail",
        "jumping into a pool", "shaking off water", "hunting", "drinking water", "sitting still", "wagging its tail",
        "playing the piano", "riding a skateboard", "surfing a wave", "driving a car", "eating spaghetti",
        "wearing a hat and dancing", "fighting", "climbing a tree", "hiding in a box", "knocking a glass off a table",
        "stealing food", "falling asleep", "waking up", "looking out the window", "walking on its hind legs",
        "riding a bicycle", "playing with a ball of yarn", "taking a bath", "howling at the moon", "digging a hole",
        "building a sandcastle", "drinking coffee", "reading a newspaper", "typing on a laptop", "playing guitar",
        "flying through the clouds", "diving underwater", "spreading its wings", "landing on a branch",
        "floating in a hot spring", "pouncing on a toy", "licking the camera", "giving a high five",
    ),
    "person": (
        "walking", "dancing", "running", "smiling", "walking towards the camera", "turning around", "laughing",
        "crying", "singing", "playing guitar", "playing the piano", "playing the violin", "reading a book",
        "drinking coffee", "eating ramen", "cooking", "painting", "writing a letter", "looking at the camera",
        "looking up at the sky", "looking out the window", "walking in the rain", "running in slow motion",
        "jumping", "doing a backflip", "skateboarding", "surfing", "riding a horse", "riding a motorcycle",
        "driving a car", "fighting", "sword fighting", "boxing", "meditating", "doing yoga", "praying",
        "kissing", "hugging", "waving goodbye", "holding hands", "taking a selfie", "talking on the phone",
        "giving a speech", "presenting the news", "playing basketball", "playing football", "ice skating",
        "skiing down a slope", "climbing a mountain", "swimming", "diving into the sea", "floating in space",
        "falling", "flying", "shouting", "whispering", "lighting a cigarette", "blowing out candles",
        "opening a present", "proposing", "sleeping", "waking up", "brushing her hair", "putting on makeup",
        "doing a tiktok dance", "breakdancing", "marching", "fishing", "gardening", "sweeping the floor",
    ),
    "creature": (
        "flying", "breathing fire", "roaring", "walking", "sleeping", "waking up", "fighting a knight",
        "spreading its wings", "landing", "flying over a city", "dancing", "waving", "looking at the camera",
        "destroying a city", "casting a spell", "glowing", "floating", "transforming", "repairing itself",
        "walking through the rain", "rising from the water", "hatching from an egg", "guarding a treasure",
        "playing with children", "watering a plant", "melting", "exploding into pieces",
    ),
    "vehicle": (
        "driving fast", "drifting around a corner", "racing", "speeding down a highway", "parked",
        "driving through the rain", "flying", "taking off", "landing", "sailing", "crashing", "exploding",
        "passing by", "driving towards the camera", "jumping over a ramp", "floating", "sinking",
        "going through a tunnel", "driving off a cliff", "transforming into a robot",
    ),
    "food": (
        "sizzling", "steaming", "being sliced", "being cut in half", "spinning slowly", "melting",
        "falling in slow motion", "exploding", "being poured", "being served", "being assembled",
        "bubbling", "dripping", "being dipped in chocolate", "being flipped", "rotating on a plate",
    ),
    "product": (
        "rotating slowly", "floating in the air", "spinning", "falling into water", "emerging from smoke",
        "being unboxed", "splashing", "bursting through ice", "on a rotating pedestal", "assembling itself",
        "breaking apart", "glowing",
    ),
    "scene": (
        "in a timelapse", "at night", "changing seasons", "in the rain", "covered in fog", "at sunrise",
        "at sunset", "in a storm", "under the northern lights", "slowly revealed", "from above", "glowing",
        "in winter", "burning", "collapsing", "floating", "underwater",
    ),
    "group": (
        "walking", "running", "dancing", "playing", "celebrating", "looking at the camera", "moving together",
        "sitting around a campfire", "swimming", "flying", "marching", "singing", "having a picnic", "fighting",
        "taking a group photo", "running away from something", "sleeping in a pile", "playing in the snow",
    ),
}

# Actions rare ideas give to any subject: the long tail of odd requests.
SURREAL_ACTIONS = (
    "melting into a puddle", "turning into smoke", "made entirely of glass", "growing out of the ground",
    "dissolving into butterflies", "being inflated like a balloon", "shrinking to the size of an ant",
    "splitting into a hundred copies", "walking on the ceiling", "floating upside down", "turning to gold",
    "unfolding like origami", "playing chess with itself", "giving a ted talk", "doing taxes", "running for president",
    "applying for a job", "filing a complaint", "hosting a cooking show", "teaching a math class",
    "being interviewed on the news", "stuck in traffic", "waiting for the bus", "ordering at a drive thru",
)
MATERIALS = (
    "glass", "jelly", "lego bricks", "paper", "yarn", "chocolate", "ice", "smoke", "clouds", "sand", "gold",
    "marble", "wood", "clay", "cardboard", "candy", "water", "fire", "neon light", "moss", "porcelain", "balloons",
    "soap bubbles", "pasta", "crystal", "plastic", "metal", "leaves", "flowers", "cheese", "sushi", "bread",
)

PLACES = (
    "a beach", "a forest", "the city", "a snowy mountain", "a rainy street", "space", "the desert", "a kitchen",
    "a living room", "a bedroom", "a park", "a field of flowers", "a neon city", "a cyberpunk city", "the ocean",
    "a coral reef", "a jungle", "a castle", "a library", "a cafe", "a restaurant", "a bar", "a nightclub",
    "a subway station", "a train", "an airport", "a rooftop", "a bridge", "a parking lot", "a supermarket",
    "a gym", "an office", "a classroom", "a hospital", "a church", "a temple", "a shrine", "a garden",
    "a greenhouse", "a farm", "a barn", "a village", "a small town", "a medieval town", "a market",
    "a night market", "a harbor", "a lake", "a river", "a waterfall", "a cave", "a crystal cave", "a volcano",
    "a glacier", "a frozen lake", "a wheat field", "a sunflower field", "a lavender field", "a bamboo forest",
    "a pine forest", "an autumn forest", "an enchanted forest", "a swamp", "a canyon", "a cliff", "an island",
    "a tropical island", "the moon", "mars", "an alien planet", "a space station", "a spaceship", "a laboratory",
    "a factory", "a warehouse", "an abandoned building", "an abandoned amusement park", "a haunted house",
    "a graveyard", "a stadium", "a concert stage", "a theater", "a museum", "an art gallery", "a mall",
    "a laundromat", "a diner", "a gas station", "a motel", "a highway", "a dirt road", "a tunnel", "an elevator",
    "a hallway", "a staircase", "a bathroom", "a swimming pool", "a hot spring", "a sauna", "a boxing ring",
    "a dojo", "a palace", "a throne room", "a ballroom", "a pirate ship", "a submarine", "a treehouse",
    "a snow globe", "a dollhouse", "a video game", "a dream", "a painting", "a tiny world", "a giant teacup",
)
# Places that take "on" rather than "in" (the rest take "in", a few read better bare).
PLACES_ON = frozenset({
    "a beach", "a snowy mountain", "a rainy street", "a rooftop", "a bridge", "a farm", "a cliff", "an island",
    "a tropical island", "the moon", "mars", "an alien planet", "a highway", "a dirt road", "a frozen lake",
    "a concert stage", "a pirate ship", "a train", "a staircase", "a glacier", "a volcano",
})
CITIES = (
    "tokyo", "new york", "paris", "london", "seoul", "hong kong", "shanghai", "los angeles", "dubai", "venice",
    "rome", "barcelona", "istanbul", "mumbai", "bangkok", "kyoto", "san francisco", "chicago", "berlin",
    "amsterdam", "lisbon", "rio de janeiro", "mexico city", "buenos aires", "cairo", "marrakech", "havana",
    "singapore", "taipei", "osaka", "moscow", "prague", "vienna", "sydney", "cape town", "nairobi", "lagos",
    "reykjavik", "oslo", "stockholm", "copenhagen", "edinburgh", "dublin", "athens", "jerusalem", "hanoi",
    "seattle", "miami", "las vegas", "new orleans", "toronto", "vancouver", "montreal", "bali", "santorini",
    "beijing", "shenzhen", "chongqing", "jakarta", "manila", "lima", "bogota", "santiago", "helsinki",
)
CITY_PLACES = (
    "on the streets of {city}", "on a rainy street in {city}", "on a rooftop in {city}", "in a cafe in {city}",
    "at a market in {city}", "in an alley in {city}", "in the subway in {city}", "in {city} at night",
    "in old {city}", "in {city} in the year 2100", "in {city} in the 1980s", "in {city} during a snowstorm",
    "in flooded {city}", "in {city} after the apocalypse", "in a tiny apartment in {city}", "in {city}",
)
TIMES = (
    "at night", "at sunset", "at sunrise", "at dawn", "at dusk", "in the morning", "at noon", "in winter",
    "in autumn", "in spring", "in summer", "in the rain", "in the snow", "in a storm", "in the fog",
    "during a thunderstorm", "under a full moon", "on christmas eve", "on halloween", "during golden hour",
    "in heavy rain", "during a blizzard", "under the stars", "after the rain", "in 1920", "in the year 3000",
)

CAMERAS = (
    "slow motion", "close-up", "drone shot", "tracking shot", "wide shot", "aerial view", "handheld",
    "slow zoom in", "dolly zoom", "extreme close-up", "low angle", "high angle", "pov", "first person view",
    "orbit shot", "360 degree camera rotation", "the camera slowly pushes in", "the camera pulls back",
    "static camera", "timelapse", "hyperlapse", "fpv drone", "crane shot", "macro shot", "fisheye lens",
    "35mm lens", "50mm lens", "85mm lens", "telephoto", "shallow depth of field", "bokeh", "dutch angle",
    "overhead shot", "steadicam", "gimbal shot", "whip pan", "pan left", "pan right", "tilt up", "tilt down",
    "over the shoulder shot", "long take", "one continuous shot", "split screen", "vertical video",
    "security camera footage", "dashcam footage", "bodycam footage", "webcam footage", "phone footage",
)
STYLES = (
    "cinematic", "realistic", "anime style", "pixar style", "photorealistic", "studio ghibli style",
    "3d animation", "cartoon", "disney style", "cyberpunk", "claymation", "stop motion", "watercolor",
    "oil painting", "film noir", "black and white", "vintage film", "35mm film", "vhs", "retro 80s",
    "90s anime", "synthwave", "vaporwave", "steampunk", "dark fantasy", "low poly", "pixel art", "lego style",
    "unreal engine", "octane render", "hyperrealistic", "documentary", "national geographic style",
    "wes anderson style", "tim burton style", "christopher nolan style", "makoto shinkai style",
    "studio trigger style", "marvel style", "comic book style", "manga style", "ukiyo-e", "chinese ink painting",
    "impressionist", "van gogh style", "surrealism", "dali style", "art deco", "art nouveau", "minimalist",
    "isometric", "paper cutout", "origami style", "needle felted", "knitted", "chalk drawing", "pencil sketch",
    "cel shaded", "spider-verse style", "arcane style", "horror movie", "music video", "tv commercial",
    "movie trailer", "sitcom", "soap opera", "nature documentary", "found footage", "gopro", "iphone video",
    "home video", "y2k", "80s sitcom", "silent film", "technicolor", "kodachrome", "polaroid", "tilt shift",
    "miniature", "glitch art", "double exposure", "infrared", "thermal camera", "x-ray", "blueprint",
    "stained glass", "mosaic", "embroidery", "sand animation", "shadow puppets", "rotoscope", "2d animation",
)
LIGHTINGS = (
    "golden hour", "sunset lighting", "neon lights", "soft light", "dramatic lighting", "moonlight",
    "volumetric lighting", "god rays", "backlit", "rim light", "studio lighting", "natural light",
    "candlelight", "firelight", "blue hour", "harsh sunlight", "overcast", "foggy", "misty", "warm lighting",
    "cold lighting", "high contrast", "low key lighting", "high key lighting", "cinematic lighting",
    "rembrandt lighting", "colorful lights", "christmas lights", "fairy lights", "lantern light",
    "lightning flashes", "bioluminescent glow", "rgb lighting", "flickering lights", "sunbeams through the trees",
    "light leaks", "lens flare", "chiaroscuro", "pastel colors", "teal and orange",
)
DETAILS = (
    "rain falling", "snow falling", "leaves blowing in the wind", "cherry blossom petals falling", "fireflies",
    "dust in the air", "smoke", "steam", "sparks flying", "bubbles", "confetti", "fog rolling in",
    "reflections on the wet ground", "birds in the sky", "a rainbow in the background", "stars in the sky",
    "a full moon", "lanterns floating", "floating islands", "a crowd cheering", "people walking by",
    "cars passing", "waves crashing", "wind in the hair", "falling feathers", "glowing particles", "embers",
    "butterflies everywhere", "tiny people for scale", "a city in the background", "mountains in the background",
    "the ocean in the background", "lightning in the distance", "northern lights overhead", "a shooting star",
    "ripples in the water", "footprints in the sand", "a trail of glitter", "dramatic clouds", "a red balloon",
)
QUALITY_TAGS = (
    "4k", "8k", "hd", "high quality", "highly detailed", "ultra realistic", "masterpiece", "best quality",
    "sharp focus", "smooth motion", "60fps", "hdr", "trending on artstation", "award winning", "detailed",
    "ultra hd", "professional", "realistic physics", "high resolution", "beautiful", "stunning", "epic",
)
NEGATIVES = (
    "no text", "no watermark", "no blur", "no distortion", "no morphing", "no extra limbs", "normal hands",
    "no subtitles", "consistent face", "same character throughout", "no flickering", "no cuts",
)
SENTENCES = (
    "The camera slowly pushes in.", "Everything is very quiet.", "It starts raining.", "The wind picks up.",
    "At the end it looks straight at the camera.", "The background is slightly out of focus.",
    "Make the movement smooth and natural.", "It should feel like a dream.", "Colors are warm and nostalgic.",
    "Nothing else moves.", "The whole thing is one continuous shot.", "Make it funny.", "Make it epic.",
    "It ends with a fade to black.", "Loop it seamlessly.", "Like a movie trailer.", "Make it look expensive.",
    "The mood is melancholic.", "The mood is cheerful and bright.", "People in the background stop and stare.",
    "The light slowly changes from day to night.", "There is a soft breeze.", "Very satisfying to watch.",
    "Keep it realistic, not cartoonish.", "It feels like a memory.", "Slow and calm.", "Fast paced and chaotic.",
    "The shot ends on a close-up of the face.", "Then the camera flies up into the sky.",
    "Suddenly everything freezes.", "The music is loud.", "Birds fly away as it passes.",
)
OPENERS = (
    "a video of", "cinematic shot of", "a cinematic video of", "footage of", "a short clip of", "a close up of",
    "drone footage of", "slow motion video of", "an animation of", "a scene where", "a short film about",
    "realistic video of", "a beautiful shot of", "a commercial showing", "a music video with",
)
REQUEST_PREFIXES = (
    "video of ", "make a video of ", "generate ", "create a video of ", "pls make ", "i want a video of ",
    "show me ", "can you make ", "animate ", "make ", "a video where ", "prompt: ",
)
EMOJI = ("🔥", "✨", "😍", "🚀", "🌊", "😂", "🐱", "🐶", "🌸", "💀", "🎬", "🌙", "❤️", "🙏", "⚡", "👀", "🥺", "🍕", "🎉")

# Rare one-off ideas: invented names and brands keep even the word list growing.
NAME_PARTS = (("ma", "li", "to", "ka", "ro", "be", "sa", "ni", "jo", "el", "an", "mi", "da", "ke", "lu", "vi"),
              ("ria", "na", "sha", "ko", "bel", "lo", "nie", "ra", "den", "mo", "ley", "ta", "vin", "sie", "ron"))
BRAND_PARTS = (("bright", "blue", "nova", "luma", "green", "north", "silver", "happy", "urban", "pure", "wild",
                "zen", "iron", "sun", "echo", "pixel", "cloud", "maple", "coral", "rocket"),
               ("lane", "leaf", "wave", "works", "labs", "box", "bay", "nest", "peak", "byte", "forge", "field",
                "bean", "hive", "loop", "path", "stone", "glow", "craft", "spark"),
               ("coffee", "studio", "fitness", "bakery", "tech", "games", "records", "skincare", "brewing",
                "realty", "dental", "yoga", "pets", "travel", "bikes", "tea", "wines", "apparel", "books"))
RARE_TEMPLATES = (
    "logo animation for {brand}", "intro video for my youtube channel {brand}",
    "happy birthday {name}!! {subject} {action} with a cake", "{name} and {name2} getting married {setting}",
    "my dog {name} {action} {setting}", "my cat {name} dressed as {noun} {action}",
    "ad for {brand}: {subject} {action} {setting}", "{subject} made of {material} {action}",
    "{subject} {action} {setting}", "a world where everything is made of {material}, {subject} {action}",
    "what {city} would look like if it was made of {material}", "{noun} and {noun2} as best friends {action}",
    "the last {bare_noun} on earth {action} {setting}", "{noun} the size of a building {action} in {city}",
    "funeral for {noun}, everyone is crying", "a day in the life of {noun} who works at {brand}",
    "trailer for a movie called {brand} starring {subject}", "{subject} explaining quantum physics to {subject2}",
)
