"""Schemas for the text-to-SQL example: varied domains and column types.

Each schema is one main table (with a name column, numeric columns, categorical columns and
sometimes a date) and optionally a parent table it references, for joins. Nouns describe the
columns in questions so phrasings stay natural.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Num:
    name: str
    noun: str
    low: float
    high: float
    real: bool = False


@dataclass
class Cat:
    name: str
    noun: str
    values: list[str]


@dataclass
class Parent:
    table: str
    entity: str  # singular noun
    name_col: str
    cat: Cat
    fk: str  # column in the child table


@dataclass
class Schema:
    table: str
    entity: str  # singular noun ("employee")
    plural: str
    name_col: str
    nums: list[Num]
    cats: list[Cat]
    date: str | None = None
    parent: Parent | None = None
    names: list[str] = field(default_factory=list)


def S(table, entity, plural, name_col, nums, cats, date=None, parent=None, names=()):
    return Schema(table, entity, plural, name_col, nums, cats, date, parent, list(names))


FIRST = ["Ava", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Iris", "Jonas", "Kira", "Liam",
         "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara", "Umar", "Vera", "Wes", "Yara"]

TRAIN = [
    S("employees", "employee", "employees", "name",
      [Num("salary", "salary", 30000, 150000), Num("age", "age", 21, 65)],
      [Cat("department", "department", ["Sales", "Engineering", "Finance", "Support"])], date="hired_on",
      parent=Parent("offices", "office", "city", Cat("country", "country", ["France", "Japan", "Brazil"]), "office_id"),
      names=FIRST),
    S("products", "product", "products", "title",
      [Num("price", "price", 2, 900, real=True), Num("stock", "stock level", 0, 500)],
      [Cat("category", "category", ["Toys", "Garden", "Kitchen", "Books"])],
      parent=Parent("suppliers", "supplier", "company", Cat("region", "region", ["North", "South", "East"]), "supplier_id"),
      names=["Lamp", "Kettle", "Rake", "Puzzle", "Novel", "Blender", "Hose", "Robot", "Atlas", "Teapot",
             "Shovel", "Kite", "Mixer", "Diary", "Drone", "Planter", "Toaster", "Yo-yo"]),
    S("books", "book", "books", "title",
      [Num("pages", "page count", 80, 1200), Num("year", "publication year", 1950, 2024)],
      [Cat("genre", "genre", ["Fantasy", "History", "Poetry", "Science"]), Cat("language", "language", ["English", "Spanish", "German"])],
      names=["Dune Road", "Salt Hills", "Blue Fox", "Iron Bay", "Quiet Star", "Paper Moon", "Old Roots", "Red Tide",
             "Glass Key", "Green Mile", "Stone Age", "Silver Pine", "Night Owl", "Cold Lake"]),
    S("students", "student", "students", "full_name",
      [Num("gpa", "GPA", 1.5, 4.0, real=True), Num("credits", "number of credits", 0, 180)],
      [Cat("major", "major", ["Biology", "History", "Physics", "Art"])], date="enrolled_on",
      parent=Parent("advisors", "advisor", "advisor_name", Cat("faculty", "faculty", ["Science", "Humanities"]), "advisor_id"),
      names=FIRST),
    S("flights", "flight", "flights", "code",
      [Num("distance_km", "distance in km", 200, 12000), Num("seats", "number of seats", 50, 400)],
      [Cat("origin", "origin city", ["Paris", "Lima", "Oslo", "Cairo"]), Cat("status", "status", ["on time", "delayed", "cancelled"])],
      date="departs_on", names=[f"FL{n}" for n in range(101, 131)]),
    S("movies", "movie", "movies", "title",
      [Num("rating", "rating", 1, 10, real=True), Num("runtime", "runtime in minutes", 70, 200)],
      [Cat("genre", "genre", ["Drama", "Comedy", "Horror", "Action"])],
      parent=Parent("studios", "studio", "studio_name", Cat("country", "country", ["USA", "India", "Korea"]), "studio_id"),
      names=["Echo", "Mirage", "Harbor", "Comet", "Lantern", "Orbit", "Fable", "Rumble", "Zenith", "Velvet",
             "Tundra", "Nova", "Riddle", "Summit", "Cascade"]),
    S("orders", "order", "orders", "reference",
      [Num("amount", "amount", 5, 2000, real=True), Num("quantity", "quantity", 1, 40)],
      [Cat("status", "status", ["shipped", "pending", "returned"]), Cat("channel", "sales channel", ["web", "store", "phone"])],
      date="ordered_on", names=[f"ORD-{n}" for n in range(1001, 1031)]),
    S("patients", "patient", "patients", "patient_name",
      [Num("age", "age", 1, 95), Num("weight_kg", "weight in kg", 3, 140, real=True)],
      [Cat("blood_type", "blood type", ["A", "B", "AB", "O"])], date="admitted_on",
      parent=Parent("wards", "ward", "ward_name", Cat("floor", "floor", ["ground", "first", "second"]), "ward_id"),
      names=FIRST),
    S("cars", "car", "cars", "model",
      [Num("horsepower", "horsepower", 60, 600), Num("price_usd", "price in dollars", 8000, 120000)],
      [Cat("fuel", "fuel type", ["petrol", "diesel", "electric", "hybrid"]), Cat("maker", "maker", ["Ardent", "Borealis", "Cygnet"])],
      names=["Arrow", "Bolt", "Crest", "Drift", "Ember", "Flux", "Glide", "Haze", "Ion", "Jet", "Kestrel",
             "Lynx", "Mako", "Nimbus", "Onyx", "Pulse"]),
    S("recipes", "recipe", "recipes", "dish",
      [Num("calories", "calories", 80, 1400), Num("prep_minutes", "preparation time in minutes", 5, 180)],
      [Cat("cuisine", "cuisine", ["Thai", "Italian", "Mexican", "Greek"]), Cat("course", "course", ["starter", "main", "dessert"])],
      names=["Pad Thai", "Risotto", "Tacos", "Moussaka", "Tiramisu", "Salsa", "Gyros", "Curry", "Lasagna",
             "Churros", "Baklava", "Satay", "Gnocchi", "Nachos"]),
    S("songs", "song", "songs", "title",
      [Num("duration_sec", "duration in seconds", 90, 600), Num("plays", "play count", 0, 90000)],
      [Cat("genre", "genre", ["jazz", "rock", "pop", "folk"])], date="released_on",
      parent=Parent("artists", "artist", "artist_name", Cat("country", "country", ["Canada", "Nigeria", "Sweden"]), "artist_id"),
      names=["Halo", "Drift Away", "Neon", "Ocean Eyes", "Static", "Bloom", "Wildfire", "Paper Boats", "Gravity",
             "Lullaby", "Sunset", "Voltage", "Harvest", "Runaway"]),
    S("hotels", "hotel", "hotels", "hotel_name",
      [Num("rooms", "number of rooms", 10, 400), Num("nightly_rate", "nightly rate", 40, 900, real=True)],
      [Cat("city", "city", ["Rome", "Kyoto", "Austin", "Nairobi"])],
      names=["Grand Palm", "Blue Door", "Maple Inn", "Harbor View", "Sky Lodge", "Olive Court", "Cedar House",
             "Lotus Stay", "River Rest", "Summit Suites", "Garden Gate", "Amber Hall"]),
    S("games", "game", "games", "title",
      [Num("score", "review score", 10, 100), Num("players_max", "maximum number of players", 1, 64)],
      [Cat("platform", "platform", ["PC", "console", "mobile"]), Cat("rating", "age rating", ["E", "T", "M"])],
      date="launched_on", names=["Skyforge", "Pixel Run", "Deep Dive", "Star Haul", "Rune Quest", "Mech War",
                                 "Farm Life", "Speed Zone", "Word Hunt", "Chess Pro", "Zombie Dash", "Sail Away"]),
    S("athletes", "athlete", "athletes", "athlete_name",
      [Num("height_cm", "height in cm", 150, 215), Num("medals", "number of medals", 0, 30)],
      [Cat("sport", "sport", ["swimming", "rowing", "judo", "cycling"])],
      parent=Parent("teams", "team", "team_name", Cat("nation", "nation", ["Kenya", "Italy", "Chile"]), "team_id"),
      names=FIRST),
]

VAL = [
    S("trees", "tree", "trees", "species",
      [Num("height_m", "height in meters", 2, 80, real=True), Num("age_years", "age in years", 1, 900)],
      [Cat("park", "park", ["Elm Park", "Riverside", "Hilltop"])],
      names=["Oak", "Birch", "Cedar", "Maple", "Willow", "Spruce", "Ash", "Larch", "Yew", "Alder", "Poplar", "Fir"]),
    S("invoices", "invoice", "invoices", "invoice_no",
      [Num("total", "total", 10, 9000, real=True), Num("lines", "number of lines", 1, 60)],
      [Cat("currency", "currency", ["EUR", "USD", "GBP"])], date="issued_on",
      parent=Parent("clients", "client", "client_name", Cat("sector", "sector", ["retail", "health", "energy"]), "client_id"),
      names=[f"INV-{n}" for n in range(501, 525)]),
]

TEST = [
    S("planets", "planet", "planets", "planet_name",
      [Num("radius_km", "radius in km", 1000, 70000), Num("moons", "number of moons", 0, 80)],
      [Cat("system", "star system", ["Sol", "Kepler", "Vega"]), Cat("kind", "type", ["rocky", "gas", "ice"])],
      names=["Aria", "Brontes", "Cora", "Dion", "Eos", "Fenrir", "Gaia", "Helio", "Ixion", "Juno", "Kronos", "Luna"]),
    S("courses", "course", "courses", "course_title",
      [Num("fee", "fee", 50, 3000, real=True), Num("enrolled", "number of enrolled students", 3, 400)],
      [Cat("level", "level", ["beginner", "intermediate", "advanced"])], date="starts_on",
      parent=Parent("teachers", "teacher", "teacher_name", Cat("subject", "subject", ["math", "music", "coding"]), "teacher_id"),
      names=["Algebra I", "Piano Basics", "Python 101", "Jazz Theory", "Calculus", "Web Design", "Statistics",
             "Guitar Lab", "Data Science", "Geometry", "Choir", "Robotics"]),
    S("bikes", "bike", "bikes", "bike_model",
      [Num("weight_kg", "weight in kg", 6, 30, real=True), Num("gears", "number of gears", 1, 30)],
      [Cat("frame", "frame material", ["carbon", "steel", "aluminium"]), Cat("style", "style", ["road", "mountain", "city"])],
      names=["Swift", "Ridge", "Urbano", "Falcon", "Trail", "Comet", "Breeze", "Rocket", "Pioneer", "Zephyr", "Vortex", "Ranger"]),
    S("museums", "museum", "museums", "museum_name",
      [Num("visitors", "yearly visitors", 1000, 900000), Num("founded", "founding year", 1750, 2020)],
      [Cat("city", "city", ["Lisbon", "Prague", "Seoul", "Quito"])],
      parent=Parent("curators", "curator", "curator_name", Cat("field", "field", ["art", "history", "science"]), "curator_id"),
      names=["Modern Arts", "Sea Life", "Old Town", "Space Hall", "Folk House", "Glass Works", "War Records",
             "Nature Vault", "Photo Hub", "Clock Tower", "Design Lab", "Textile Loft"]),
]
